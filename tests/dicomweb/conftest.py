"""A served RadLoop with a few studies stored through STOW-RS, and clients for each role."""
from __future__ import annotations

import pytest
from dicomweb_client.api import DICOMwebClient

from tests.factories import ct_slice
from webapp.accounts.models import ApiToken


@pytest.fixture
def tokens(cast):
    return {
        "admin": ApiToken.issue(cast.admin, "test-admin")[1],
        "radiologist": ApiToken.issue(cast.radiologist, "test-reader")[1],
        "outsider": ApiToken.issue(cast.outsider, "test-outsider")[1],
    }


def client_for(base: str, token: str | None) -> DICOMwebClient:
    headers = {"Authorization": f"Bearer {token}"} if token else None
    return DICOMwebClient(f"{base}/dicomweb", headers=headers)


@pytest.fixture
def admin_dw(gunicorn_server, tokens):
    return client_for(gunicorn_server, tokens["admin"])


@pytest.fixture
def reader_dw(gunicorn_server, tokens):
    return client_for(gunicorn_server, tokens["radiologist"])


def chest_ct(n=4, **kw):
    return [ct_slice(index=i, rows=32, columns=32, **kw) for i in range(n)]


@pytest.fixture
def stored(admin_dw):
    """Two CT studies and an MR study, stored through STOW-RS."""
    ann = chest_ct(4, study="ann", series="ann-ct", patient_id="P-ANN", patient_name="Smith^Ann",
                   study_date="20250105", accession="A100")
    bob = chest_ct(3, study="bob", series="bob-ct", patient_id="P-BOB", patient_name="Jones^Bob",
                   study_date="20250210", accession="A200")
    mr = [ct_slice(index=0, rows=32, columns=32, study="cid", series="cid-mr", patient_id="P-CID",
                   patient_name="Brown^Cid", study_date="20250320", accession="A300", modality="MR")]
    for datasets in (ann, bob, mr):
        admin_dw.store_instances(datasets=datasets)
    return {"ann": ann, "bob": bob, "mr": mr}
