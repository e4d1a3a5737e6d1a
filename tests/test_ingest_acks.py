"""Acks the writer builds as bytes equal the messages upb would serialize."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from onshi.core import enrollment
from onshi.v1 import enrollment_pb2 as pb

update_ids = st.text(max_size=200)


@given(update_ids)
@settings(max_examples=300, deadline=None)
def test_accepted_ack_bytes_equal_upb(update_id):
    expected = pb.EnrollmentAck(update_id=update_id, outcome=pb.ENROLLMENT_OUTCOME_ACCEPTED)
    assert enrollment.accepted_ack_bytes(update_id) == expected.SerializeToString(deterministic=True)


acks = st.builds(
    pb.EnrollmentAck,
    update_id=update_ids,
    outcome=st.sampled_from(
        [
            pb.ENROLLMENT_OUTCOME_ACCEPTED,
            pb.ENROLLMENT_OUTCOME_REJECTED,
            pb.ENROLLMENT_OUTCOME_DUPLICATE,
            pb.ENROLLMENT_OUTCOME_QUARANTINED,
        ]
    ),
    quarantine_id=st.integers(0, 2**64 - 1),
    message=st.text(max_size=300),
    field_violations=st.lists(
        st.builds(pb.FieldViolation, field=st.text(max_size=20), description=st.text(max_size=50)), max_size=3
    ),
)


@given(st.lists(acks, max_size=20))
@settings(max_examples=200, deadline=None)
def test_framed_acks_parse_to_the_same_response(messages):
    """Short acks (one-byte length) and long ones (varint length) alike."""
    raw = [m.SerializeToString(deterministic=True) for m in messages]
    framed = enrollment.frame_acks(raw)
    assert framed == pb.StreamUpdateBatchesResponse(acks=messages).SerializeToString(deterministic=True)
    assert list(pb.StreamUpdateBatchesResponse.FromString(framed).acks) == messages
