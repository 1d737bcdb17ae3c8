"""Source positions in the status: one sub-object per kind, and statuses written before that still read."""

from auditwatch.api.models import AuditDetectionStatus, SourceStatus
from auditwatch.sources.cloudwatch import CloudWatchPosition
from auditwatch.sources.file import FilePosition


def test_each_kind_keeps_its_position_in_its_own_sub_object():
    status = SourceStatus(name="a", seq=9, cloudwatch=CloudWatchPosition(2_000, 1_000, 9).status())
    dumped = status.model_dump(mode="json", exclude_unset=True)
    assert dumped == {"name": "a", "seq": 9, "cloudwatch": {"promptThrough": "1970-01-01T00:00:02.000Z",
                                                             "lateThrough": "1970-01-01T00:00:01.000Z"}}  # fmt: skip
    assert SourceStatus.model_validate(dumped) == status
    assert CloudWatchPosition.saved(status.cloudwatch, status.seq) == CloudWatchPosition(2_000, 1_000, 9)
    assert FilePosition.saved(status.file, status.seq) is None  # no file position in a log group's status


def test_flat_statuses_of_every_kind_are_read_into_their_sub_objects():
    file = SourceStatus.model_validate({"name": "f", "file": "/var/log/a.log", "inode": 7, "offset": 5, "seq": 50})
    assert FilePosition.saved(file.file, file.seq) == FilePosition("/var/log/a.log", 7, 5, 50) and file.webhook is None
    hook = SourceStatus.model_validate({"name": "w", "file": "webhook:/audit", "inode": 8, "offset": 1, "seq": 1})
    assert hook.webhook is not None and hook.webhook.path == "webhook:/audit" and hook.file is None
    flat_cw = {"name": "c", "promptThrough": "2026-01-01T00:00:00.000Z", "lateThrough": "2026-01-01T00:00:00.000Z",
               "apiCalls": 4, "seq": 3, "lastError": "throttled", "file": "", "inode": 0, "offset": 0}  # fmt: skip
    cw = SourceStatus.model_validate(flat_cw)
    assert cw.cloudwatch is not None and cw.cloudwatch.apiCalls == 4 and cw.file is None and cw.lastError == "throttled"
    never_read = SourceStatus.model_validate({"name": "n", "file": "", "inode": 0, "offset": 0, "seq": 0})
    assert (never_read.file, never_read.webhook, never_read.cloudwatch) == (None, None, None)


def test_a_whole_detection_status_written_by_the_old_version_is_read():
    old = {"shards": {"cp-0": {"sources": [{"name": "f", "file": "/var/log/a.log", "inode": 7, "offset": 5, "seq": 5}],
                               "counters": {"lines": 1}}}}  # fmt: skip
    status = AuditDetectionStatus.model_validate(old)
    [source] = status.shards["cp-0"].sources
    assert source.file is not None and source.file.offset == 5
