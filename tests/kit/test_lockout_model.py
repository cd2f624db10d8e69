"""``LockoutModel.admit_in_memory``: its shortcut for the usual login (nothing held, nothing
in flight) decides exactly what the full rule decides."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

from imhost.accounts.throttle import attempt_keys, policies, xmpp_key
from imhost.config import SecuritySettings
from imhost.kit.lockout import ThrottleState, _current, record_failure

NOW = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)


def test_the_shortcut_decides_as_the_full_rule() -> None:
    model = policies(SecuritySettings())
    states = [
        ThrottleState(),
        ThrottleState(trusted_until=NOW + timedelta(days=3)),
        ThrottleState(trusted_until=NOW - timedelta(days=1)),  # trust expired
        ThrottleState(failures=1, last_failure_at=NOW - timedelta(seconds=5)),
        ThrottleState(failures=2, last_failure_at=NOW - timedelta(days=3)),  # forgotten
        ThrottleState(failures=6, last_failure_at=NOW, locked_until=NOW + timedelta(minutes=1)),
        ThrottleState(locked_until=NOW - timedelta(minutes=1)),  # lock over
    ]
    checked = 0
    for address in ("192.0.2.1", None):
        keys = attempt_keys(xmpp_key("alice@a.example"), address)
        for combo in itertools.product(states, repeat=len(keys.all())):
            given = dict(zip(keys.all(), combo, strict=True))
            for flying in (0, 1):
                in_flight = dict.fromkeys(keys.all(), flying)
                got = model.admit_in_memory(keys, given, in_flight, NOW)
                # The full rule, spelled out (what admit_in_memory did before the shortcut).
                effective = {}
                for key in keys.all():
                    state = given[key]
                    for _ in range(flying):
                        state = record_failure(state, NOW, model.policy_for(keys, key))
                    effective[key] = state
                admission, _ = model.admit(keys, effective, NOW)
                expected = admission
                if not admission.allowed or admission.decision.delay_seconds > 0:
                    expected = None
                else:
                    for key in admission.counted:
                        state = _current(given[key], NOW, model.policy_for(keys, key))
                        if state.failures or state.is_locked(NOW):
                            expected = None
                            break
                assert got == expected, (given, flying)
                checked += 1
    assert checked > 100
