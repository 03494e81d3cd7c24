"""Service lifecycles: every (phase, trigger) pair against the legal table, `died` from
anywhere, no convenience methods that bypass the table, and `Lifecycles.sync` semantics."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from supervisor.lifecycle import (
    IN_FLIGHT,
    Key,
    Lifecycles,
    MachineError,
    ServiceLifecycle,
    phase_from_container,
)
from supervisor.model.current import ContainerInfo, Phase

P = Phase
KEY: Key = (1, "web", "c0mm1t")
SETTLED_CONTAINER = (P.INSTALLED, P.RUNNING, P.EXITED, P.DEAD, P.PAUSED, P.RESTARTING,
                     P.REMOVING)

# The legal moves, written out from engine.md §2.1/§8.4 independently of lifecycle.py's table.
LEGAL: dict[str, dict[Phase, Phase]] = {
    "download": {P.DOWNLOADING: P.DOWNLOADING, P.DOWNLOADED: P.DOWNLOADING,
                 P.DEAD: P.DOWNLOADING},
    "downloaded": {P.DOWNLOADING: P.DOWNLOADED},
    "install": {P.DOWNLOADED: P.INSTALLING, P.DEAD: P.INSTALLING, P.EXITED: P.INSTALLING},
    "installed": {P.INSTALLING: P.INSTALLED},
    "start": {P.INSTALLED: P.STARTING, P.EXITED: P.STARTING},
    "started": {P.STARTING: P.RUNNING},
    "await_handover": {P.STARTING: P.AWAITING_HANDOVER},
    "handover_complete": {P.AWAITING_HANDOVER: P.RUNNING},
    "hand_over": {P.RUNNING: P.HANDING_OVER},
    "stop": {p: P.STOPPING for p in (
        P.RUNNING, P.STARTING, P.INSTALLED, P.EXITED, P.PAUSED, P.RESTARTING, P.HANDING_OVER,
        P.AWAITING_HANDOVER, P.DEAD, P.INSTALLING)},
    "stopped": {P.STOPPING: P.EXITED},
    "failed": {P.INSTALLING: P.DEAD, P.STARTING: P.DEAD, P.STOPPING: P.DEAD},
    "died": {p: P.DEAD for p in Phase},
}
CASES = [(phase, trigger) for trigger in LEGAL for phase in Phase]


def new(phase: Phase, changes: list[tuple[Key, Phase]] | None = None) -> ServiceLifecycle:
    sink = changes if changes is not None else []
    return Lifecycles(lambda key, p: sink.append((key, p))).ensure(KEY, phase)


@pytest.mark.parametrize(("phase", "trigger"), CASES,
                         ids=[f"{p.name}-{t}" for p, t in CASES])
def test_transition_table(phase: Phase, trigger: str) -> None:
    changes: list[tuple[Key, Phase]] = []
    model = new(phase, changes)
    expected = LEGAL[trigger].get(phase)
    if expected is None:
        with pytest.raises(MachineError):
            getattr(model, trigger)()
        assert model.state is phase and changes == []
    else:
        assert getattr(model, trigger)() is True
        assert model.state is expected
        assert changes == [(KEY, expected)]  # each transition is published once


def test_every_trigger_of_the_table_is_declared_on_the_model() -> None:
    for trigger in LEGAL:
        assert callable(getattr(ServiceLifecycle, trigger))


def test_no_bypass_methods_are_generated() -> None:
    model = new(P.RUNNING)
    generated = [name for name in dir(model) if name.startswith(("to_", "is_", "may_"))]
    assert generated == []


def test_reasons_travel_with_failures() -> None:
    model = new(P.STARTING)
    model.failed(reason="exec format error")
    assert (model.state, model.reason) == (P.DEAD, "exec format error")
    model.died()
    assert model.reason == ""


@settings(max_examples=200)
@given(st.sampled_from(list(Phase)), st.lists(st.sampled_from(sorted(LEGAL)), max_size=12))
def test_random_trigger_sequences_follow_the_table(start: Phase, triggers: list[str]) -> None:
    model = new(start)
    phase = start
    for trigger in triggers:
        expected = LEGAL[trigger].get(phase)
        if expected is None:
            with pytest.raises(MachineError):
                getattr(model, trigger)()
        else:
            getattr(model, trigger)()
            phase = expected
        assert model.state is phase and model.state in Phase
    model.died()
    assert model.state is P.DEAD


def test_a_normal_life_download_to_removal() -> None:
    model = new(P.DOWNLOADED)
    for trigger in ("download", "downloaded", "install", "installed", "start", "started",
                    "stop", "stopped"):
        getattr(model, trigger)()
    assert model.state is P.EXITED


def test_hand_over_lives() -> None:
    lifecycles = Lifecycles(lambda key, p: None)
    old = lifecycles.ensure((1, "web", "old"), P.RUNNING)
    new_one = lifecycles.ensure((1, "web", "new"), P.DOWNLOADED)
    old.hand_over()
    for trigger in ("install", "installed", "start", "await_handover", "handover_complete"):
        getattr(new_one, trigger)()
    old.stop()
    old.stopped()
    assert (old.state, new_one.state) == (P.EXITED, P.RUNNING)


# ---------------------------------------------------------------------------- registry and sync

def test_ensure_keeps_an_existing_record_and_drop_forgets_it() -> None:
    lifecycles = Lifecycles(lambda key, p: None)
    first = lifecycles.ensure(KEY, P.RUNNING)
    assert lifecycles.ensure(KEY, P.DOWNLOADED) is first and first.state is P.RUNNING
    lifecycles.drop(KEY)
    lifecycles.drop(KEY)  # dropping twice is harmless
    assert lifecycles.get(KEY) is None and len(lifecycles) == 0


def test_reseat_starts_over_and_publishes() -> None:
    changes: list[tuple[Key, Phase]] = []
    lifecycles = Lifecycles(lambda key, p: changes.append((key, p)))
    lifecycles.ensure(KEY, P.RUNNING)
    model = lifecycles.reseat(KEY, P.EXITED)
    assert model.state is P.EXITED and lifecycles.get(KEY) is model
    assert changes == [(KEY, P.EXITED)]


def test_sync_adds_observed_records() -> None:
    lifecycles = Lifecycles(lambda key, p: None)
    lifecycles.sync({KEY: P.RUNNING, (1, "db", "c0mm1t"): P.INSTALLED})
    assert dict(lifecycles.items()) == {KEY: P.RUNNING, (1, "db", "c0mm1t"): P.INSTALLED}


@pytest.mark.parametrize("settled", [P.RUNNING, P.EXITED, P.INSTALLED, P.DEAD, P.DOWNLOADED])
def test_sync_reseats_settled_records_docker_contradicts(settled: Phase) -> None:
    changes: list[tuple[Key, Phase]] = []
    lifecycles = Lifecycles(lambda key, p: changes.append((key, p)))
    lifecycles.ensure(KEY, settled)
    observed = P.EXITED if settled is not P.EXITED else P.RUNNING
    lifecycles.sync({KEY: observed})
    assert dict(lifecycles.items()) == {KEY: observed}
    assert changes == [(KEY, observed)]


def test_sync_leaves_agreeing_records_untouched() -> None:
    changes: list[tuple[Key, Phase]] = []
    lifecycles = Lifecycles(lambda key, p: changes.append((key, p)))
    model = lifecycles.ensure(KEY, P.RUNNING)
    lifecycles.sync({KEY: P.RUNNING})
    assert lifecycles.get(KEY) is model and changes == []


@pytest.mark.parametrize("flying", sorted(IN_FLIGHT, key=str))
def test_sync_never_overrides_work_in_flight(flying: Phase) -> None:
    lifecycles = Lifecycles(lambda key, p: None)
    model = lifecycles.ensure(KEY, flying)
    lifecycles.sync({KEY: P.EXITED})
    assert lifecycles.get(KEY) is model and model.state is flying
    lifecycles.sync({})  # not observed at all (a download has no container yet): kept too
    assert lifecycles.get(KEY) is model


@pytest.mark.parametrize("phase", [P.HANDING_OVER, P.AWAITING_HANDOVER])
def test_sync_keeps_hand_over_phases_of_running_containers(phase: Phase) -> None:
    lifecycles = Lifecycles(lambda key, p: None)
    model = lifecycles.ensure(KEY, phase)
    lifecycles.sync({KEY: P.RUNNING})
    assert lifecycles.get(KEY) is model and model.state is phase
    lifecycles.sync({KEY: P.EXITED})  # but a hand-over container that stopped is re-seated
    assert lifecycles.get(KEY) is not model and dict(lifecycles.items()) == {KEY: P.EXITED}


def test_sync_forgets_settled_records_without_a_container() -> None:
    lifecycles = Lifecycles(lambda key, p: None)
    lifecycles.ensure(KEY, P.EXITED)
    lifecycles.ensure((1, "db", "c0mm1t"), P.DOWNLOADED)
    lifecycles.ensure((1, "api", "c0mm1t"), P.DOWNLOADING)
    lifecycles.sync({})
    assert dict(lifecycles.items()) == {(1, "api", "c0mm1t"): P.DOWNLOADING}


# ---------------------------------------------------------------------------- observation

def container(state: str, running: bool) -> ContainerInfo:
    return ContainerInfo(id="c1", name="web_1_1_c0mm1t", app_id=1, app_uuid="u", service_name="web",
                         service_id=1, image_id=1, release_id=1, commit="c0mm1t", state=state,
                         running=running, image="sha256:x", image_name="x", created="")


@pytest.mark.parametrize(("state", "running", "phase"), [
    ("running", True, P.RUNNING),
    ("restarting", True, P.RUNNING),  # Docker says Running while restarting
    ("created", False, P.INSTALLED),
    ("exited", False, P.EXITED),
    ("dead", False, P.DEAD),
    ("paused", False, P.PAUSED),
    ("restarting", False, P.RESTARTING),
    ("removing", False, P.REMOVING),
    ("weird", False, P.EXITED),
])
def test_phase_from_container(state: str, running: bool, phase: Phase) -> None:
    assert phase_from_container(container(state, running)) is phase


def test_settled_container_phases_are_not_in_flight() -> None:
    assert not IN_FLIGHT & set(SETTLED_CONTAINER)
    assert {p.value for p in IN_FLIGHT} == {"Downloading", "Installing", "Starting", "Stopping"}
