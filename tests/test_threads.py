"""common/threads.py: the thread count follows the CPUs this process may use and the load of the other processes;
explicit choices win; the command restores the thread count it found."""
import pytest
import torch

from certkit.common import threads


def test_usable_cpus_respects_the_affinity_mask():
    import os

    assert 1 <= threads.usable_cpus() <= len(os.sched_getaffinity(0))


def test_explicit_choices_win(monkeypatch):
    monkeypatch.setenv("CERTKIT_THREADS", "1")
    assert threads.ThreadGovernor().fixed == 1
    assert threads.ThreadGovernor(3).fixed == 3                # --threads over the environment
    monkeypatch.delenv("CERTKIT_THREADS")
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert threads.ThreadGovernor().fixed == 2
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert threads.ThreadGovernor().fixed is None


@pytest.mark.parametrize("others,expected", [(0.0, 4), (0.9, 3), (2.2, 2), (3.9, 1), (7.0, 1)])
def test_threads_are_the_cpus_the_other_processes_leave(monkeypatch, others, expected):
    """On 4 usable CPUs, with the other processes keeping ``others`` CPUs busy for 1 s (this one: 0.5 CPU)."""
    monkeypatch.delenv("CERTKIT_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    g = threads.ThreadGovernor()
    g.affinity, g.cpus = {0, 1, 2, 3}, 4
    g._last = (threads.time.perf_counter() - 1.0, (100.0, 10.0))   # the last sample, one second ago
    monkeypatch.setattr(threads, "_busy_seconds", lambda cpus: (100.0 + others + 0.5, 10.5))
    g._update()
    assert g.threads == expected


def test_a_quota_caps_this_process_not_the_others(monkeypatch):
    """16 CPUs in the mask, a cgroup quota of 2: two threads while the machine has room, one when only one is left."""
    monkeypatch.delenv("CERTKIT_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    g = threads.ThreadGovernor()
    g.affinity, g.cpus = set(range(16)), 2
    for others, expected in ((10.0, 2), (15.0, 1)):
        g._last = (threads.time.perf_counter() - 1.0, (0.0, 0.0))
        monkeypatch.setattr(threads, "_busy_seconds", lambda cpus, o=others: (o, 0.0))
        g._update()
        assert g.threads == expected


def test_the_command_restores_the_thread_count_it_found(cli, tmp_path):
    before = torch.get_num_threads()
    r = cli("certify", "--threads", 1, "--max", 2, "--n", 100, "--n0", 10, "--quiet", "--out", tmp_path / "a.tsv")
    assert r.exit_code == 0, r.output
    assert torch.get_num_threads() == before
    r = cli("certify", "--threads", 0, "--out", tmp_path / "b.tsv")
    assert r.exit_code != 0 and "--threads" in r.output
    threads.tick()                                             # no governor installed: a no-op
    assert torch.get_num_threads() == before
