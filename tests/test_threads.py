"""The thread policy (robust_mix.threads): usable CPUs, the processes sharing them, explicit choices."""
from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest
import torch

from robust_mix import threads
from robust_mix.threads import ThreadClaim, cgroup_cpu_quota, live_claims, plan_threads


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)
    threads._State.plan = None


def _cgroup(tmp_path, membership: str, files: dict[str, str]):
    tmp_path.mkdir(parents=True, exist_ok=True)
    proc = tmp_path / "proc_cgroup"
    proc.write_text(membership)
    for rel, text in files.items():
        path = tmp_path / "fs" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return dict(root=tmp_path / "fs", proc_cgroup=proc)


def test_cgroup_v2_quota_is_read_from_the_process_cgroup_and_its_parents(tmp_path):
    paths = _cgroup(tmp_path, "0::/jobs/eval\n", {"jobs/eval/cpu.max": "max 100000\n",
                                                 "jobs/cpu.max": "150000 100000\n", "cpu.max": "max 100000"})
    assert cgroup_cpu_quota(**paths) == 1.5
    unlimited = _cgroup(tmp_path / "u", "0::/a\n", {"a/cpu.max": "max 100000\n"})
    assert cgroup_cpu_quota(**unlimited) is None


def test_cgroup_v1_quota(tmp_path):
    paths = _cgroup(tmp_path, "4:memory:/x\n3:cpu,cpuacct:/slurm/job7\n",
                    {"cpu,cpuacct/slurm/job7/cpu.cfs_quota_us": "200000\n",
                     "cpu,cpuacct/slurm/job7/cpu.cfs_period_us": "100000\n",
                     "cpu,cpuacct/cpu.cfs_quota_us": "-1\n", "cpu,cpuacct/cpu.cfs_period_us": "100000\n"})
    assert cgroup_cpu_quota(**paths) == 2.0
    assert cgroup_cpu_quota(proc_cgroup=tmp_path / "missing") is None


def test_policy_divides_usable_cpus_by_the_processes_sharing_them():
    assert plan_threads(environ={}, cpus=8, claims=1).threads == 8
    assert plan_threads(environ={"LOCAL_WORLD_SIZE": "4"}, cpus=8, claims=1).threads == 2  # torchrun
    assert plan_threads(processes=3, environ={}, cpus=8, claims=1).threads == 2  # our own workers
    assert plan_threads(environ={}, cpus=8, claims=2).threads == 4  # another robust_mix run
    assert plan_threads(environ={}, cpus=1.5, claims=1).threads == 1  # a fractional quota
    plan = plan_threads(processes=4, environ={}, cpus=2, claims=1)
    assert (plan.threads, plan.source, plan.processes) == (1, "policy", 4)


def test_explicit_choices_win_in_order():
    env = {"ROBUST_MIX_THREADS": "3", "OMP_NUM_THREADS": "5", "LOCAL_WORLD_SIZE": "2"}
    assert (plan_threads(2, environ=env, cpus=8, claims=1).threads,
            plan_threads(2, environ=env, cpus=8, claims=1).source) == (2, "argument")
    assert plan_threads(environ=env, cpus=8, claims=1).source == "ROBUST_MIX_THREADS"
    omp = plan_threads(environ={"OMP_NUM_THREADS": "5,2"}, cpus=8, claims=1)
    assert (omp.threads, omp.source) == (5, "OMP_NUM_THREADS")


def test_bad_values_are_named():
    with pytest.raises(ValueError, match=r"ROBUST_MIX_THREADS must be a positive whole number.*'two'"):
        plan_threads(environ={"ROBUST_MIX_THREADS": "two"}, cpus=2, claims=1)
    with pytest.raises(ValueError, match=r"threads must be .*got 0"):
        plan_threads(0, environ={}, cpus=2, claims=1)
    assert plan_threads(environ={"OMP_NUM_THREADS": "lots"}, cpus=2, claims=1).source == "policy"


def test_thread_counts_beyond_the_ceiling_are_refused_wherever_they_come_from(caplog):
    """100,000 threads made oneDNN fail with "could not create a primitive" (reported as a model that does not fit
    its images) and 10**23 overflowed torch.set_num_threads; every explicit count now follows one rule."""
    from robust_mix.parallel import Job, run_jobs

    assert plan_threads(threads.MAX_THREADS, environ={}, cpus=2, claims=1).threads == threads.MAX_THREADS
    too_many = threads.MAX_THREADS + 1
    with pytest.raises(ValueError, match=rf"threads must be at most 1024 threads, got {too_many}"):
        plan_threads(too_many, environ={}, cpus=2, claims=1)
    with pytest.raises(ValueError, match=r"ROBUST_MIX_THREADS must be at most 1024 threads, got '100000'"):
        plan_threads(environ={"ROBUST_MIX_THREADS": "100000"}, cpus=2, claims=1)
    with pytest.raises(ValueError, match=r"threads_per_worker must be at most 1024 threads, got 100000000000"):
        run_jobs([Job("a", abs, {"x": 1}), Job("b", abs, {"x": 1})], workers=2, threads_per_worker=10 ** 11)
    with caplog.at_level(logging.WARNING, logger="robust_mix.threads"):
        assert plan_threads(environ={"OMP_NUM_THREADS": "100000"}, cpus=2, claims=1).source == "policy"
    assert "ignoring OMP_NUM_THREADS='100000': not a whole number from 1 to 1024" in caplog.text


def test_busy_machine_is_flagged():
    plan = threads.ThreadPlan(2, "policy", 2.0, 1, load_average=2.4)
    assert plan.busy and not threads.ThreadPlan(2, "policy", 2.0, 1, load_average=0.3).busy
    # a container's quota (2 CPUs) on a 64-CPU host: the host-wide load of 10 leaves the quota free
    assert not threads.ThreadPlan(2, "policy", 2.0, 1, load_average=10.0, machine_cpus=64).busy
    assert threads.ThreadPlan(2, "policy", 2.0, 1, load_average=70.0, machine_cpus=64).busy


def test_busy_warning_compares_the_load_with_the_whole_machine(monkeypatch, caplog):
    monkeypatch.setattr(threads, "load_average", lambda: 10.0)
    monkeypatch.setattr(threads, "usable_cpus", lambda: 2.0)
    monkeypatch.setattr(threads.os, "cpu_count", lambda: 64)
    with caplog.at_level("WARNING", logger="robust_mix.threads"):
        plan = threads.apply_thread_policy(1)
    assert plan.machine_cpus == 64 and not plan.busy and "busy" not in caplog.text
    monkeypatch.setattr(threads.os, "cpu_count", lambda: 8)
    with caplog.at_level("WARNING", logger="robust_mix.threads"):
        threads.apply_thread_policy(1)
    assert "load average 10.00 on its 8 CPUs" in caplog.text


def test_claims_count_live_processes_and_drop_stale_ones(tmp_path):
    mine = ThreadClaim(tmp_path).acquire()
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (tmp_path / str(child.pid)).write_text(threads._start_time(child.pid))
        (tmp_path / "999999999").write_text("1")  # a process that no longer exists
        (tmp_path / str(os.getppid())).write_text("not its start time")  # a reused pid
        assert live_claims(tmp_path) == 2
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted([str(os.getpid()), str(child.pid)])
    finally:
        child.kill()
        child.wait()
    assert live_claims(tmp_path) == 1
    mine.release()
    assert live_claims(tmp_path) == 0


def test_apply_sets_torch_threads_logs_once_and_rebalances(monkeypatch, tmp_path, caplog):
    monkeypatch.setenv(threads.RUNTIME_ENV_VAR, str(tmp_path))
    monkeypatch.delenv(threads.ENV_VAR, raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.setattr(threads, "usable_cpus", lambda: 2.0)
    monkeypatch.setattr(threads, "REBALANCE_INTERVAL_S", 0.0)
    monkeypatch.setattr(threads._State, "claim", None)
    with caplog.at_level(logging.INFO, logger="robust_mix.threads"):
        plan = threads.apply_thread_policy()
        threads.apply_thread_policy()
        assert (plan.threads, torch.get_num_threads()) == (2, 2)
        assert live_claims(tmp_path) == 1
        other = ThreadClaim(tmp_path / "other")  # another robust_mix run appears...
        other.path = tmp_path / str(os.getppid())
        other.path.write_text(threads._start_time(os.getppid()))
        assert threads.rebalance().threads == 1 and torch.get_num_threads() == 1
        other.path.unlink()  # ... and ends
        assert threads.rebalance().threads == 2
        with threads.suspend_claim():
            assert live_claims(tmp_path) == 0
        assert live_claims(tmp_path) == 1
    threads.release_claim()
    assert live_claims(tmp_path) == 0
    messages = [r.getMessage() for r in caplog.records if r.name == "robust_mix.threads"]
    assert messages.count("threads: 2 thread(s) per process (policy: usable CPUs // processes; 2 usable CPU(s), "
                          "1 process(es))") == 2  # once at first, once when it went back to 2
    assert any("1 thread(s)" in m and "2 process(es)" in m for m in messages)


def test_computing_commands_take_threads_and_others_do_not():
    import argparse

    from robust_mix.cli import build_parser, main

    main(["list", "nothing-*"])  # imports the command modules
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    with_threads = {name for name, sub in commands.items() if "--threads" in sub._option_string_actions}
    assert with_threads == {"benchmark", "sweep", "demo", "certify", "train"}
    assert parser.parse_args(["demo", "--threads", "3"]).threads == 3
    for bad in ("0", "1025", str(10 ** 23)):
        with pytest.raises(SystemExit):
            parser.parse_args(["demo", "--threads", bad])


def test_malformed_cgroup_files_mean_no_limit_instead_of_a_crash(tmp_path):
    cases = [("garbage line\n0::/\n", {"cpu.max": "150000 100000"}, 1.5),  # a line without the 3 fields is skipped
             ("0::/\n", {"cpu.max": "abc 100000"}, None), ("0::/\n", {"cpu.max": "100000 0"}, None),
             ("0::/\n", {"cpu.max": "-5 100000"}, None), ("0::/\n", {"cpu.max": "0 100000"}, None),
             ("0::/\n", {"cpu.max": "max"}, None), ("0::/\n", {"cpu.max": ""}, None),
             ("0::/\n", {"cpu.max": "50000 100000"}, 0.5),  # a quota below one CPU is a real limit
             ("3:cpu:/\n", {"cpu/cpu.cfs_quota_us": "50000.5\n", "cpu/cpu.cfs_period_us": "0\n"}, None),
             ("3:cpu:/\n", {"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None)]
    for i, (membership, files, expected) in enumerate(cases):
        assert cgroup_cpu_quota(**_cgroup(tmp_path / str(i), membership, files)) == expected, (membership, files)
    undecodable = tmp_path / "bytes"
    paths = _cgroup(undecodable, "0::/\n", {"cpu.max": "max 100000"})
    paths["proc_cgroup"].write_bytes(b"\xff\xfe0::/\n")
    assert cgroup_cpu_quota(**paths) is None


def test_a_cgroup_path_outside_the_namespace_is_not_read_above_the_cgroup_root(tmp_path):
    # a process outside its cgroup namespace's root sees "/../x": the files above the mount are not cgroups
    paths = _cgroup(tmp_path, "0::/../../elsewhere\n", {"cpu.max": "max 100000", "../cpu.max": "50000 100000"})
    assert cgroup_cpu_quota(**paths) is None


def test_claims_where_there_is_no_proc_folder_are_kept_while_their_process_lives(monkeypatch, tmp_path):
    monkeypatch.setattr(threads, "PROC", tmp_path / "no-proc")  # macOS: no /proc
    folder = tmp_path / "claims"
    mine = ThreadClaim(folder).acquire()
    (folder / "999999999").write_text("")  # a process that no longer exists
    assert live_claims(folder) == 1
    assert sorted(p.name for p in folder.iterdir()) == [str(os.getpid())]
    mine.release()


def test_claim_files_that_cannot_be_read_or_removed_do_not_stop_a_run(monkeypatch, tmp_path):
    (tmp_path / "999999999").write_bytes(b"\xff\xfe")  # undecodable: not a claim this code wrote
    (tmp_path / str(os.getpid())).write_bytes(b"\xff")
    assert live_claims(tmp_path) == 0
    (tmp_path / "999999998").write_text("1")

    def refuse(self, missing_ok=False):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(threads.Path, "unlink", refuse)  # another user's file in a shared folder, a read-only one
    assert live_claims(tmp_path) == 0
    claim = ThreadClaim(tmp_path).acquire()
    claim.release()  # logged, not raised: the command's own result matters more
    assert not claim.held


def test_no_usable_temporary_folder_does_not_stop_a_run(monkeypatch):
    def no_tmp():
        raise FileNotFoundError(2, "No usable temporary directory found")

    monkeypatch.delenv(threads.RUNTIME_ENV_VAR, raising=False)
    monkeypatch.setattr(threads.tempfile, "gettempdir", no_tmp)
    assert not ThreadClaim().acquire().held
    assert live_claims() == 0
    assert plan_threads(environ={}, cpus=2).threads == 2


def test_a_bad_omp_num_threads_is_warned_about_once(caplog):
    with caplog.at_level(logging.WARNING, logger="robust_mix.threads"):
        for _ in range(3):  # rebalance() plans again before every attack batch
            assert plan_threads(environ={"OMP_NUM_THREADS": "0,once"}, cpus=2, claims=1).source == "policy"
    assert sum("OMP_NUM_THREADS" in r.getMessage() for r in caplog.records) == 1


def test_local_world_size_is_read_as_processes():
    assert plan_threads(environ={"LOCAL_WORLD_SIZE": ""}, cpus=8, claims=1).threads == 8  # empty = unset
    assert plan_threads(environ={"LOCAL_WORLD_SIZE": " 16 "}, cpus=8, claims=1).threads == 1  # more than CPUs
    with pytest.raises(ValueError, match=r"LOCAL_WORLD_SIZE must be a positive whole number of processes.*'abc'"):
        plan_threads(environ={"LOCAL_WORLD_SIZE": "abc"}, cpus=8, claims=1)


def test_claims_are_never_written_or_read_through_links_nor_kept_in_a_folder_others_can_write(tmp_path, caplog):
    """Claims live in the shared temporary folder: a robust_mix-<uid> folder made by another user first could hold a
    link named by this process's pid (the claim overwrote the file it points to) or a FIFO (reading it blocks)."""
    precious = tmp_path / "precious.txt"
    precious.write_text("a week of notes\n")
    folder = tmp_path / "claims"
    folder.mkdir(mode=0o700)
    (folder / str(os.getpid())).symlink_to(precious)
    (folder / "12345").symlink_to(precious)
    assert not ThreadClaim(folder).acquire().held
    assert precious.read_text() == "a week of notes\n"
    assert live_claims(folder) == 0  # the links are no claims
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    claim = ThreadClaim(shared).acquire()
    assert not claim.held and not list(shared.iterdir())
    (shared / str(os.getpid())).write_text(threads._start_time(os.getpid()) or "")
    assert live_claims(shared) == 0
    assert "robust_mix's thread claims are not kept there" in caplog.text


@pytest.mark.parametrize("kind", ["a-file", "under-a-file"])
def test_a_runtime_dir_that_cannot_hold_claims_is_named_in_a_warning(monkeypatch, tmp_path, caplog, kind):
    """A $ROBUST_MIX_RUNTIME_DIR the user set that cannot be written was a debug message only: the run went on
    unregistered, and the runs sharing the CPUs silently did not count it."""
    (tmp_path / "a-file").write_text("x")
    folder = tmp_path / "a-file" if kind == "a-file" else tmp_path / "a-file" / "claims"
    monkeypatch.setenv(threads.RUNTIME_ENV_VAR, str(folder))
    with caplog.at_level(logging.WARNING, logger="robust_mix.threads"):
        claim = threads.ThreadClaim().acquire()
    assert not claim.held
    assert f"ROBUST_MIX_RUNTIME_DIR={str(folder)!r} cannot hold robust_mix's thread claims" in caplog.text
    assert "set ROBUST_MIX_RUNTIME_DIR to a folder of yours" in caplog.text


def test_a_runtime_dir_expands_home(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv(threads.RUNTIME_ENV_VAR, "~/claims")
    assert threads.claims_dir() == tmp_path / "claims"
