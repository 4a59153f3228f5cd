"""Query parameters of the case browser, parsed and validated at the boundary."""
from django import forms

from .models import AIStatus, ReviewStatus

SORTS = {
    "-study_date": "Newest study first",
    "study_date": "Oldest study first",
    "patient_name": "Patient name A-Z",
    "-patient_name": "Patient name Z-A",
    "patient_id": "Patient ID",
    "-created_at": "Recently uploaded",
    "-num_instances": "Most images",
}


class StudyFilterForm(forms.Form):
    q = forms.CharField(required=False, max_length=100, label="Patient ID / name / accession")
    date_from = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    date_to = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    modality = forms.CharField(required=False, max_length=16)
    review_status = forms.ChoiceField(required=False, choices=[("", "Any review status"), *ReviewStatus.choices])
    ai_status = forms.ChoiceField(required=False, choices=[("", "Any AI status"), *AIStatus.choices])
    sort = forms.ChoiceField(required=False, choices=list(SORTS.items()))

    def clean(self):
        data = super().clean()
        if data.get("date_from") and data.get("date_to") and data["date_from"] > data["date_to"]:
            raise forms.ValidationError("The start date is after the end date.")
        return data
