"""The EDMM ioctls over the wire, each an op of its own, from a real workload process to a real engine."""

from __future__ import annotations

import pytest

from .engine_fixture import RunningEngine
from .puppet import Puppet

pytestmark = pytest.mark.slow


def test_modify_types_restrict_permissions_and_remove_trimmed_answer_as_the_ioctls(engine: RunningEngine) -> None:
    with Puppet(engine.endpoint) as owner, Puppet(engine.endpoint) as other:
        owner.ok("hello", pid=owner.pid, role="enclave")
        other.ok("hello", pid=other.pid, role="enclave")
        eid = owner.ok("ecreate", size=64 * 4096)["eid"]
        assert owner.ok("add_pages", eid=eid, count=32)["added"] == 32
        before_einit = owner.send("modify_types", eid=eid, first=0, count=1, kind="TRIM")
        assert before_einit["err"] == "EINVAL"
        owner.ok("einit", eid=eid)
        for first, count in ((60, 5), (64, 1)):  # outside the enclave: sgx_validate_offset_length()
            assert owner.send("remove_trimmed", eid=eid, first=first, count=count)["err"] == "EINVAL"
        assert owner.send("modify_types", eid=eid, first=0, count=1, kind="REG")["err"] == "EINVAL"
        assert other.send("modify_types", eid=eid, first=0, count=1, kind="TRIM")["err"] == "EPERM"  # not yours
        reply = owner.send("modify_types", eid=eid, first=30, count=4, kind="TRIM")  # 32, 33 never added
        assert reply["err"] == "EFAULT" and "(after 2 pages)" in reply["msg"]
        reply = owner.send("remove_trimmed", eid=eid, first=30, count=2)
        assert reply["err"] == "EPERM" and "EACCEPT" in reply["msg"]  # trimmed, not accepted
        owner.ok("access", eid=eid, ranges=[[30, 2]])  # the enclave's EACCEPT
        assert owner.ok("remove_trimmed", eid=eid, first=30, count=2) == {"count": 2}
        assert owner.ok("modify_types", eid=eid, first=0, count=1, kind="TCS") == {"count": 1}
        assert owner.ok("restrict_permissions", eid=eid, first=1, count=29) == {"count": 29}
        reply = owner.send("restrict_permissions", eid=eid, first=0, count=2)
        assert reply["err"] == "EINVAL"  # a TCS page has no permissions to restrict
        owner.ok("release", eid=eid)
    engine.check()
