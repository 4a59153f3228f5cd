"""The active-learning order: which unreviewed case teaches the model most, and why.

Every case that the AI has read and that is not signed off gets a *priority*:

    priority = uncertainty x (1 - DIVERSITY_WEIGHT x similarity to the closest case already chosen)

computed greedily: the case with the highest priority is ranked #1, then every remaining case is
down-weighted by its similarity to #1, the next best is #2, and so on. "Already chosen" starts with the
``RECENT_REVIEWED`` cases signed off most recently, so a kind of case the radiologists just corrected
(and the next retraining will learn from) is not asked for again at once.

**Uncertainty.** ``InferenceRun.case_uncertainty`` of the champion's run of the case: with test-time
augmentation (``INFERENCE_TTA``, on by default) it is the largest per-finding disagreement between
the flipped reads of the detector and segmenter (``ml.inference.predictor``). A case the champion has
not read yet uses its latest finished run of another model; a case without a TTA run uses the largest
``Finding.uncertainty`` of its AI findings, and failing that counts as 0 (certain).

**Why diversity, and why this feature vector.** Retraining happens in batches (every
``RETRAIN_EVERY_N_SIGNED_OFF`` sign-offs). Pure uncertainty sampling fills a batch with near-copies
(e.g. ten faint ground-glass nodules at the score threshold): the first teaches the model, the other
nine add little, and the batch misses other failure modes. Batch-mode active learning (Brinker 2003;
core-set, Sener & Savarese 2018; BADGE, Ash et al. 2020) therefore mixes uncertainty with diversity.
We measure similarity on four numbers the database already holds for every case, so the ranking costs
a handful of queries and can be *explained* to a radiologist: the number of AI findings, the largest
diameter, and the mean HU and score of the most uncertain finding (HU separates ground-glass, solid
and calcified; score separates faint from confident). Network embeddings would be finer but are not
stored, cost a model pass, and cannot be put into words on the worklist. The penalty is multiplicative
and capped at ``DIVERSITY_WEIGHT`` (1/2): uncertainty stays the main criterion, and a case is never
pushed behind one with less than half its uncertainty by diversity alone.

The ranking is a pure function (:func:`rank_cases`) fed by :func:`current_ranking` with four queries
whatever the number of cases.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

DIVERSITY_WEIGHT = 0.5       # the most a case can lose for looking like one already chosen
SIMILARITY_SCALE = 0.2       # feature distance at which similarity has fallen to exp(-1)
RECENT_REVIEWED = 20         # signed-off cases that count as "already chosen"
MAX_FINDINGS_FEATURE = 5     # feature scaling: findings counted up to this
MAX_DIAMETER_MM = 30.0
HU_RANGE = (-1000.0, 100.0)  # lung air .. solid tissue


@dataclass(frozen=True)
class FindingStats:
    """What the ranking needs of one AI finding."""

    uncertainty: float | None
    diameter_mm: float
    mean_hu: float | None
    score: float | None


def features(findings: list[FindingStats]) -> np.ndarray:
    """The case's feature vector, each entry in [0, 1]: number of findings, largest diameter, mean HU
    and score of the most uncertain finding. A case without findings is the zero vector."""
    if not findings:
        return np.zeros(4)
    top = max(findings, key=lambda f: (f.uncertainty or 0.0, f.diameter_mm))
    lo, hi = HU_RANGE
    hu = 0.0 if top.mean_hu is None else (top.mean_hu - lo) / (hi - lo)
    return np.clip([
        len(findings) / MAX_FINDINGS_FEATURE,
        max(f.diameter_mm for f in findings) / MAX_DIAMETER_MM,
        hu,
        top.score or 0.0,
    ], 0.0, 1.0)


@dataclass
class Candidate:
    """A case to rank (or, with ``reviewed``, one already reviewed that ranked cases are compared to)."""

    study_id: int
    name: str                      # how the worklist names the case (patient ID)
    uncertainty: float | None
    features: np.ndarray
    reviewed: bool = False


@dataclass
class CasePriority:
    study_id: int
    rank: int                       # 1 = read first
    uncertainty: float | None
    priority: float                 # uncertainty after the diversity penalty
    penalty: float = 0.0            # share of the uncertainty taken off (0 .. DIVERSITY_WEIGHT)
    similar_to: str = ""            # the closest case chosen before this one
    similar_reviewed: bool = False  # ... and whether it was already reviewed (else: ranked before)
    similar_rank: int | None = None
    features: np.ndarray = field(default_factory=lambda: np.zeros(4), repr=False)

    @property
    def why(self) -> str:
        """One line for the worklist: what the rank rests on."""
        text = ("no uncertainty measured" if self.uncertainty is None
                else f"AI uncertainty {self.uncertainty:.2f}")
        if self.penalty >= 0.005 and self.similar_to:
            where = "already reviewed" if self.similar_reviewed else f"ranked #{self.similar_rank}"
            text += f"; −{self.penalty:.0%} similar to {self.similar_to} ({where})"
        return text


def similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """exp(-(distance / SIMILARITY_SCALE)^2): 1 for equal feature vectors, ~0 for distant ones.
    ``b`` may be a matrix of vectors (one per row)."""
    d = np.linalg.norm(np.atleast_2d(b) - a, axis=-1)
    return np.exp(-(d / SIMILARITY_SCALE) ** 2)


def rank_cases(candidates: list[Candidate], reviewed: list[Candidate] = ()) -> list[CasePriority]:
    """Greedy uncertainty-with-diversity order of ``candidates`` (in the given order on ties: pass them
    oldest first). ``reviewed`` cases count as chosen before the first pick."""
    n = len(candidates)
    if n == 0:
        return []
    unc = np.array([c.uncertainty or 0.0 for c in candidates], float)
    feats = np.array([c.features for c in candidates], float).reshape(n, -1)
    best_sim = np.zeros(n)
    best_ref: list[int | None] = [None] * n          # index into ``chosen`` of the closest chosen case
    chosen: list[tuple[Candidate, int | None]] = []  # (case, its rank; None for reviewed)

    def take_into_account(c: Candidate, rank: int | None) -> None:
        chosen.append((c, rank))
        sim = similarity(np.asarray(c.features, float), feats)
        closer = sim > best_sim
        best_sim[closer] = sim[closer]
        for i in np.flatnonzero(closer):
            best_ref[i] = len(chosen) - 1

    for r in reviewed:
        take_into_account(r, None)
    left = np.ones(n, bool)
    out: list[CasePriority] = []
    for rank in range(1, n + 1):
        factor = 1.0 - DIVERSITY_WEIGHT * best_sim
        priority = np.where(left, unc * factor, -np.inf)
        i = int(np.argmax(priority))   # first index on ties: the candidates' own order
        c = candidates[i]
        ref = chosen[best_ref[i]] if best_ref[i] is not None else None
        penalty = float(DIVERSITY_WEIGHT * best_sim[i])
        out.append(CasePriority(
            study_id=c.study_id, rank=rank, uncertainty=c.uncertainty, priority=float(unc[i] * factor[i]),
            penalty=penalty if ref is not None else 0.0, similar_to=ref[0].name if ref else "",
            similar_reviewed=bool(ref and ref[1] is None), similar_rank=ref[1] if ref else None,
            features=feats[i]))
        left[i] = False
        take_into_account(c, rank)
    return out


# --- from the database ----------------------------------------------------------------------------


def current_ranking(champion=None) -> dict[int, CasePriority]:
    """``{study_id: CasePriority}`` for every AI-ready case that is not signed off, in four queries.

    ``champion``: the model whose runs count (default: the current champion)."""
    from webapp.archive.models import AIStatus, ReviewStatus, Study
    from webapp.modelops.models import InferenceRun, ModelVersion

    from .models import CaseReview, Finding

    pool = list(Study.objects.filter(ai_status=AIStatus.AI_READY).exclude(review_status=ReviewStatus.SIGNED_OFF)
                .order_by("created_at", "pk").values_list("pk", "patient_id", "study_uid"))
    recent = list(CaseReview.objects.filter(signed_off_at__isnull=False, study__review_status=ReviewStatus.SIGNED_OFF)
                  .order_by("-signed_off_at", "-pk").values_list("study_id", "study__patient_id", "study__study_uid")
                  [:RECENT_REVIEWED])
    ids = [p[0] for p in pool] + [r[0] for r in recent]
    if not pool:
        return {}
    # The run that speaks for a case: the champion's, else the latest finished one of any model.
    runs: dict[int, list] = {}
    champion_id = champion.pk if champion is not None else None
    for study_id, model_id, unc, status in (
            InferenceRun.objects.filter(series__study_id__in=ids, state=InferenceRun.State.DONE)
            .order_by("finished_at", "pk").values_list("series__study_id", "model_version_id", "case_uncertainty",
                                                        "model_version__status")):
        runs.setdefault(study_id, []).append((model_id, unc))
        if champion is None and status == ModelVersion.Status.CHAMPION:
            champion_id = model_id
    chosen_model: dict[int, int | None] = {}
    case_unc: dict[int, float | None] = {}
    for study_id, rows in runs.items():
        champion_rows = [r for r in rows if r[0] == champion_id]
        use = champion_rows or [r for r in rows if r[0] == rows[-1][0]]
        chosen_model[study_id] = use[0][0]
        values = [u for _, u in use if u is not None]
        case_unc[study_id] = max(values) if values else None
    stats: dict[int, list[FindingStats]] = {}
    for study_id, model_id, unc, diameter, hu, score in (
            Finding.objects.filter(study_id__in=ids, source=Finding.Source.AI).order_by()
            .values_list("study_id", "model_version_id", "uncertainty", "diameter_mm", "mean_hu", "score")):
        if study_id in chosen_model and model_id != chosen_model[study_id]:
            continue  # a finding of a model that does not speak for this case
        stats.setdefault(study_id, []).append(FindingStats(unc, diameter, hu, score))

    def candidate(study_id: int, name: str, reviewed: bool) -> Candidate:
        found = stats.get(study_id, [])
        unc = case_unc.get(study_id)
        if unc is None:
            measured = [f.uncertainty for f in found if f.uncertainty is not None]
            unc = max(measured) if measured else None
        return Candidate(study_id, name, unc, features(found), reviewed)

    def name(patient_id: str, study_uid: str) -> str:
        return patient_id or f"study …{study_uid[-8:]}"

    ranked = rank_cases([candidate(pk, name(pid, uid), False) for pk, pid, uid in pool],
                        [candidate(pk, name(pid, uid), True) for pk, pid, uid in recent])
    return {p.study_id: p for p in ranked}
