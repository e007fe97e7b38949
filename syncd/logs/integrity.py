"""What a peer's import may do to a partition's raw records (DESIGN §6 step 4).

Raw records only grow: a record's kind and creation fields never change, its event list
only gains entries, and each device's events on a record are numbered 1, 2, 3, ... with
no gap. (A number may repeat: two daemons cloned from one state dir share a device id;
the fold keeps both events, so refusing them would drop a write.) An import that breaks
any of this is refused whole.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Iterable, Mapping

from syncd.errors import InvalidRecordError
from syncd.logs.records import RawRecord, canonical_json
from syncd.logs.validate import validate_record


def check_growth(before: Mapping[str, RawRecord], after: Iterable[RawRecord]) -> list[RawRecord]:
    """Validate ``after`` against ``before``; return the records that are new or grew."""
    after_ids: set[str] = set()
    changed: list[RawRecord] = []
    for record in after:
        after_ids.add(record.id)
        old = before.get(record.id)
        if old is None:
            validate_record(record)
            _check_event_numbering(record)
            changed.append(record)
            continue
        if record.kind != old.kind or record.fields != old.fields:
            raise InvalidRecordError(f"records.{record.id}", "creation fields were rewritten")
        if len(record.events) == len(old.events) and record.events == old.events:
            continue
        try:
            remaining = Counter(canonical_json(e) for e in record.events)
        except ValueError:  # NaN or infinity in an event: not JSON we store
            raise InvalidRecordError(f"records.{record.id}.events", "holds a value JSON cannot store") from None
        remaining.subtract(canonical_json(e) for e in old.events)
        if any(n < 0 for n in remaining.values()):
            raise InvalidRecordError(f"records.{record.id}", "events were removed or rewritten")
        validate_record(record)
        _check_event_numbering(record)
        changed.append(record)
    lost = set(before) - after_ids
    if lost:
        raise InvalidRecordError(f"records.{sorted(lost)[0]}", "a record disappeared")
    return changed


def _check_event_numbering(record: RawRecord) -> None:
    by_device: defaultdict[str, list[int]] = defaultdict(list)
    for event in record.events:
        device, seq = event.get("device_id"), event.get("seq")
        if not isinstance(device, str) or not isinstance(seq, int) or isinstance(seq, bool):
            raise InvalidRecordError(f"records.{record.id}.events", "an event lacks device_id or seq")
        by_device[device].append(seq)
    for device, seqs in by_device.items():
        if set(seqs) != set(range(1, max(seqs) + 1)):
            raise InvalidRecordError(
                f"records.{record.id}.events", f"events of device {device[:12]} are not numbered 1..n"
            )
