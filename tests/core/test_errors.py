from replicator.core.errors import TargetError, unwrap


def test_unwrap_finds_our_error_in_a_nursery_group():
    ours = TargetError("target down")
    assert unwrap(BaseExceptionGroup("", [ExceptionGroup("", [ours])])) is ours
    assert unwrap(BaseExceptionGroup("", [ValueError("x"), ours])) is ours
    stranger = BaseExceptionGroup("", [ValueError("x"), KeyError("y")])
    assert unwrap(stranger) is stranger
