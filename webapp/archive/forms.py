"""Query parameters of the case browser, parsed and validated at the boundary."""
from django import forms

from .models import AIStatus, ReviewStatus

SORTS = {
    "priority_rank": "Most informative first (AI priority)",
    "-study_date": "Newest study first",
    "study_date": "Oldest study first",
    "patient_name": "Patient name A-Z",
    "-patient_name": "Patient name Z-A",
    "patient_id": "Patient ID",
    "-created_at": "Recently uploaded",
    "-num_instances": "Most images",
    "-max_uncertainty": "Most uncertain AI first",
    "-largest_mm": "Largest AI finding first",
    "-ai_findings": "Most AI findings first",
}
# Every column the case browser can sort by (ascending key; "-key" sorts descending). Whitelisted:
# nothing else from the query string reaches order_by.
SORTABLE_COLUMNS = (
    "patient_name", "patient_id", "study_date", "first_modality", "num_instances", "ai_status", "ai_findings",
    "largest_mm", "max_uncertainty", "review_status", "assignee_name", "created_at", "priority_rank",
)
DEFAULT_SORT = "priority_rank"  # the active-learning order (webapp.review.ranking)
ASSIGNMENT_CHOICES = [("", "All cases"), ("mine", "Assigned to me"), ("unassigned", "Unassigned")]
AI_RESULT_CHOICES = [("", "AI positive or negative"), ("positive", "AI positive"), ("negative", "AI negative")]


class StudyFilterForm(forms.Form):
    q = forms.CharField(required=False, max_length=100, label="Patient ID / name / accession")
    date_from = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    date_to = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    modality = forms.CharField(required=False, max_length=16)
    review_status = forms.ChoiceField(required=False, choices=[("", "Any review status"), *ReviewStatus.choices])
    ai_status = forms.ChoiceField(required=False, choices=[("", "Any AI status"), *AIStatus.choices])
    assigned = forms.ChoiceField(required=False, choices=ASSIGNMENT_CHOICES)
    ai_result = forms.ChoiceField(required=False, choices=AI_RESULT_CHOICES)
    sort = forms.CharField(required=False, max_length=32, widget=forms.Select(choices=list(SORTS.items())))

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        current = self.data.get("sort", "") if self.data else ""
        if current and current not in SORTS and current.lstrip("-") in SORTABLE_COLUMNS:
            # sorted by a column header: keep that order selected when the filters are applied again
            label = current.lstrip("-").replace("_", " ")
            self.fields["sort"].widget.choices = [*SORTS.items(), (current, f"By {label} ({'descending' if current.startswith('-') else 'ascending'})")]

    def clean_sort(self):
        sort = self.cleaned_data["sort"]
        if sort and sort.lstrip("-") not in SORTABLE_COLUMNS:
            raise forms.ValidationError(f"Cannot sort by {sort!r}.")
        return sort

    def clean(self):
        data = super().clean()
        if data.get("date_from") and data.get("date_to") and data["date_from"] > data["date_to"]:
            raise forms.ValidationError("The start date is after the end date.")
        return data
