"""The worklist: review columns on the case browser's query, and which case to read next.

Everything is a subquery or a join on the one study query, so a page costs a fixed number of
queries whatever its length. The active-learning priority (:mod:`.ranking`) is computed once per
request for every AI-ready case that is not signed off, and joined in as ``priority_rank``.
"""
from __future__ import annotations

from django.db.models import Case, Count, F, IntegerField, Max, OuterRef, Q, QuerySet, Subquery, Value, When
from django.db.models.functions import Coalesce

from webapp.archive.models import AIStatus, ReviewStatus, Series, Study

from .models import Finding
from .ranking import CasePriority, current_ranking


def _ai_findings(study_ref=OuterRef("pk")):
    """The AI's positive findings: at or above its model's operating point (candidates below it are not counted)."""
    return Finding.objects.filter(study=study_ref, source=Finding.Source.AI, flagged=True).order_by().values("study")


def with_review_columns(studies: QuerySet[Study]) -> QuerySet[Study]:
    """Adds ``ai_findings`` (count), ``largest_mm``, ``max_uncertainty`` (of AI findings),
    ``assignee_name``, ``case_notice`` and ``first_modality``."""
    return studies.annotate(
        ai_findings=Coalesce(Subquery(_ai_findings().annotate(n=Count("pk")).values("n")[:1]), Value(0)),
        largest_mm=Subquery(_ai_findings().annotate(m=Max("diameter_mm")).values("m")[:1]),
        max_uncertainty=Subquery(_ai_findings().annotate(m=Max("uncertainty")).values("m")[:1]),
        assignee_name=F("case_review__assignee__username"),
        case_notice=F("case_review__notice"),  # why a case was reopened without its reader (see CaseReview.notice)
        first_modality=Subquery(
            Series.objects.filter(study=OuterRef("pk")).order_by("modality").values("modality")[:1]
        ),
    )


def filter_assignment(studies: QuerySet[Study], who: str, user) -> QuerySet[Study]:
    """``who``: "mine" (assigned to ``user``), "unassigned", or anything else (all)."""
    if who == "mine":
        return studies.filter(case_review__assignee=user)
    if who == "unassigned":
        return studies.filter(Q(case_review__isnull=True) | Q(case_review__assignee__isnull=True))
    return studies


def filter_ai_result(studies: QuerySet[Study], result: str) -> QuerySet[Study]:
    """"positive": AI ready with at least one AI finding; "negative": AI ready with none."""
    if result == "positive":
        return studies.filter(ai_status=AIStatus.AI_READY, ai_findings__gt=0)
    if result == "negative":
        return studies.filter(ai_status=AIStatus.AI_READY, ai_findings=0)
    return studies


def with_priority(studies: QuerySet[Study], ranking: dict[int, CasePriority] | None = None) -> QuerySet[Study]:
    """Adds ``priority_rank``: the case's place in the active-learning order (1 = read first; None for
    cases that are signed off or not read by the AI yet)."""
    ranking = current_ranking() if ranking is None else ranking
    if not ranking:
        return studies.annotate(priority_rank=Value(None, output_field=IntegerField()))
    return studies.annotate(priority_rank=Case(
        *[When(pk=study_id, then=Value(p.rank)) for study_id, p in ranking.items()],
        default=Value(None), output_field=IntegerField()))


def next_case(user) -> Study | None:
    """Highest-priority case for ``user``: not signed off and not assigned to someone else; AI ready
    first, then assigned to the user before unassigned, then the active-learning order (most
    informative first, see :mod:`.ranking`), then the oldest in the archive."""
    studies = with_priority(Study.objects.exclude(review_status=ReviewStatus.SIGNED_OFF))
    studies = studies.filter(
        Q(case_review__isnull=True) | Q(case_review__assignee__isnull=True) | Q(case_review__assignee=user)
    )
    studies = studies.annotate(
        ai_rank=Case(When(ai_status=AIStatus.AI_READY, then=0), default=1, output_field=IntegerField()),
        mine_rank=Case(When(case_review__assignee=user, then=0), default=1, output_field=IntegerField()),
    )
    return studies.order_by("ai_rank", "mine_rank", F("priority_rank").asc(nulls_last=True), "created_at", "pk").first()


def viewer_url(study_uid: str) -> str:
    """The viewer page of a study (served by webapp.viewer)."""
    return f"/studies/{study_uid}/view/"
