import os
import uuid

from nectar.shared.ids import random_id


def test_forked_workers_never_share_ids():
    """Ids (endpoint runs', requests') come from a pool of random bytes; a gunicorn worker forked
    after the pool was filled must not hand out the ids its parent (or a sibling) will."""
    random_id()  # the pool is filled before the fork
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child, which must never return into pytest
        try:
            os.write(write, random_id().bytes)
        finally:
            os._exit(0)
    os.waitpid(child, 0)
    childs_id = uuid.UUID(bytes=os.read(read, 16))
    assert childs_id != random_id() and childs_id.version == 4


def test_ids_are_distinct_across_refills():
    """More ids than one read of the random source gives: none repeats."""
    ids = {random_id() for _ in range(1000)}
    assert len(ids) == 1000 and all(i.version == 4 for i in ids)
