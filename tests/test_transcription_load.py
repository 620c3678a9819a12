"""Partial transcripts yield to final ones across an ingress's sessions."""

from serve_app.session.transcription_load import TranscriptionLoad


def test_partials_wait_while_any_final_transcript_is_outstanding():
    load = TranscriptionLoad(max_partials_in_flight=2)
    assert load.partial_allowed()
    with load.in_flight(partial=False):
        assert not load.partial_allowed()
    assert load.partial_allowed()


def test_only_a_few_partials_at_a_time_and_failures_release_their_slot():
    load = TranscriptionLoad(max_partials_in_flight=2)
    with load.in_flight(partial=True), load.in_flight(partial=True):
        assert not load.partial_allowed()
    try:
        with load.in_flight(partial=False):
            raise RuntimeError("STT down")
    except RuntimeError:
        pass
    assert load.partial_allowed() and load.finals == 0 and load.partials == 0
