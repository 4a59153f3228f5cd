"""The held-out split: a fixed share by a hash of the study UID, stable across runs and settings."""
from __future__ import annotations

import hashlib

from webapp.training import dataset
from webapp.training.models import DataSnapshot, SnapshotCase

UIDS = [f"1.2.826.0.1.3680043.10.1337.{i}" for i in range(2000)]


def test_the_split_is_a_deterministic_share_of_study_uids(db):
    first = dataset.split_of(UIDS, share=0.2)
    again = dataset.split_of(list(reversed(UIDS)), share=0.2)

    assert first == again
    held = [uid for uid, side in first.items() if side == "heldout"]
    assert 0.17 < len(held) / len(UIDS) < 0.23
    uid = held[0]  # the rule, by hand
    assert int(hashlib.sha256(uid.encode()).hexdigest()[:16], 16) / 2**64 < 0.2


def test_a_study_keeps_its_recorded_side_when_the_share_changes(db):
    sides = dataset.split_of(UIDS[:50], share=0.2)
    snapshot = DataSnapshot.objects.create(heldout_share=0.2)
    SnapshotCase.objects.bulk_create(SnapshotCase(snapshot=snapshot, study_uid=uid, revision=1, split=side)
                                     for uid, side in sides.items())

    assert dataset.split_of(UIDS[:50], share=0.0) == sides
    assert dataset.split_of(UIDS[:50], share=0.9) == sides
    unrecorded = dataset.split_of(UIDS[50:100], share=0.0)
    assert set(unrecorded.values()) == {"train"}
