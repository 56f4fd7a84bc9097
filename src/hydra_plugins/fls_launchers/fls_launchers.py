"""hydra-submitit-launcher, for sweeps in which a dead job must not hide the others.

Upstream's `launch` ends with `[j.results()[0] for j in jobs]`: the first job that died
outside Python (killed, out of memory, out of time with no requeue left, cancelled) raises
there, and the sweep stops waiting for the rest and reports none of them. These launchers:

- wait for every job, and turn a dead job into a failed JobReturn that names its SLURM
  state and its log, so the sweeper's summary lists it beside the cells that raised;
- with `hydra.launcher.wait=false`, submit and return at once, printing the job ids and
  how to follow them (the jobs do not need the submitting process);
- record every job in the sweep directory's jobs file (fls.job_records), with the cell it
  runs (the sweep's grid, fls.grid) and the study stage it is (`stage`), which sweep-status
  and the study's job chain (studies/chain.py) read;
- end a job whose cell failed with exit status 1: Hydra turns the cell's exception into a
  FAILED result that submitit saves as a success, and SLURM would then count the job as
  COMPLETED and start the stages that depend on it.

Everything else is upstream's: the job runs the launcher's `__call__`, and on SLURM's
pre-timeout signal (USR2) submitit calls its `checkpoint`, which resubmits the same cell.

Hydra groups: hydra/launcher=fls_submitit_slurm and fls_submitit_local, used by the
profiles in conf/launcher/.
"""

import atexit
import getpass
import logging
import os
import shutil
import sys
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from hydra.core.config_store import ConfigStore
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf, LocalQueueConf, SlurmQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import BaseSubmititLauncher
from omegaconf import OmegaConf

from fls import job_records
from fls.facts import now
from fls.grid import job_cells
from fls.rundir import SweepDir

log = logging.getLogger(__name__)

# Seconds between looks at the jobs' result files; SLURM itself is asked far less often
# (submitit's watcher: after 2, 4, 8 ... seconds, then every 10 minutes at most).
POLL_S = 2.0
# Seconds between looks at squeue for jobs SLURM has forgotten (FlsSlurmLauncher._vanished).
VANISH_CHECK_S = 15.0


class CellJobDied(RuntimeError):
    """A job that ended without a result: killed, out of memory or time, cancelled."""


@dataclass
class FlsSlurmConf(SlurmQueueConf):
    _target_: str = "hydra_plugins.fls_launchers.fls_launchers.FlsSlurmLauncher"
    # wait for every job and report the failed cells; false: submit, print the job ids, return
    wait: bool = True
    # the study stage the jobs are (studies/chain.py): recorded in jobs.jsonl; null: the app
    stage: Optional[str] = None


@dataclass
class FlsLocalConf(LocalQueueConf):
    _target_: str = "hydra_plugins.fls_launchers.fls_launchers.FlsLocalLauncher"
    # wait for every job and report the failed cells; false: submit, print the job ids, return
    wait: bool = True
    # the study stage the jobs are (studies/chain.py): recorded in jobs.jsonl; null: the app
    stage: Optional[str] = None


ConfigStore.instance().store(group="hydra/launcher", name="fls_submitit_slurm", node=FlsSlurmConf, provider="fls-sweeps")
ConfigStore.instance().store(group="hydra/launcher", name="fls_submitit_local", node=FlsLocalConf, provider="fls-sweeps")


def _why_dead(job: Any, error: Exception) -> str:
    """One line for the sweep's summary: what became of the job and where its log is."""
    if type(error).__name__ == "FailedJobError":
        # submitit quotes the job's traceback between two dashed lines; its last line is the error
        lines = str(error).splitlines()
        dashes = [i for i, line in enumerate(lines) if line.startswith("-----")]
        if len(dashes) >= 2 and dashes[1] > dashes[0] + 1:
            return f"job {job.job_id} failed outside the cell ({lines[dashes[1] - 1].strip()}); log: {job.paths.stderr}"
    return f"job {job.job_id} ended without a result (state {job.state}); log: {job.paths.stderr}"


def _exit_failed_after_result() -> None:
    """Make this job process end with exit status 1 once submitit has saved its result.

    Hydra catches a cell's exception into a FAILED JobReturn, submitit pickles it as a
    success and the process exits 0: SLURM records COMPLETED, so stages that depend on the
    job (afterok) would run on a cell that failed. The result is still saved as usual (a
    waiting sweep reads the cell's error from it); then the exit status says the truth."""
    def leave() -> None:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)

    atexit.register(leave)


def submitit_executor(cluster: str, params: Dict[str, Any]) -> Any:
    """A submitit executor for a launcher profile's parameters (hydra.launcher less
    _target_, wait and stage): upstream's mapping, hydra-submitit-launcher 1.2.0."""
    import submitit

    init_params = {"folder": params["submitit_folder"]}
    specific_init_keys = {"max_num_timeout"}
    init_params.update(**{f"{cluster}_{x}": y for x, y in params.items() if x in specific_init_keys})
    init_keys = specific_init_keys | {"submitit_folder"}
    executor = submitit.AutoExecutor(cluster=cluster, **init_params)
    baseparams = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(
        **{x if x in baseparams else f"{cluster}_{x}": y for x, y in params.items() if x not in init_keys}
    )
    return executor


class _Launcher(BaseSubmititLauncher):
    def __init__(self, wait: bool = True, stage: Optional[str] = None, **params: Any) -> None:
        super().__init__(**params)
        self.wait = wait
        self.stage = stage

    def __call__(self, *args: Any, **kwargs: Any) -> JobReturn:
        """In the job: run the cell (upstream), put the traceback of a cell that raised in
        its logs (train.log, the job's stderr; Hydra keeps it only in the JobReturn), and
        end the job with exit status 1 when the cell failed."""
        ret = super().__call__(*args, **kwargs)
        error = ret._return_value
        if ret.status == JobStatus.FAILED:
            if isinstance(error, BaseException):
                log.error("cell %s failed", " ".join(ret.overrides or []), exc_info=(type(error), error, error.__traceback__))
            log.error("the job ends with exit status 1 (the cell failed): SLURM cancels the jobs that wait for it")
            _exit_failed_after_result()
        return ret

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        assert self.config is not None
        submitted = time.time()
        jobs = self._submit(job_overrides, initial_job_idx)
        self._record(jobs, job_overrides, submitted)
        if not self.wait:
            self._tell_how_to_follow(jobs)
            return [JobReturn(overrides=list(o), status=JobStatus.UNKNOWN, task_name=self._app) for o in job_overrides]
        vanished = self._wait_all(jobs)
        return [self._job_return(job, overrides, vanished) for job, overrides in zip(jobs, job_overrides)]

    @property
    def _app(self) -> str:
        assert self.config is not None
        return str(self.config.hydra.job.name)

    def _executor(self) -> Any:
        return submitit_executor(self._EXECUTOR, self.params)

    def _submit(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> List[Any]:
        """Upstream's launch up to the submission (hydra-submitit-launcher 1.2.0)."""
        assert self.config is not None
        executor = self._executor()
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        log.info(f"Submitit '{self._EXECUTOR}' sweep output dir : {sweep_dir}")
        sweep_dir.mkdir(parents=True, exist_ok=True)
        if "mode" in self.config.hydra.sweep:
            sweep_dir.chmod(int(str(self.config.hydra.sweep.mode), 8))

        job_params: List[Any] = []
        for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
            log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
            job_params.append((list(overrides), "hydra.sweep.dir", idx, f"job_id_for_{idx}", Singleton.get_state()))
        return list(executor.map_array(self, *zip(*job_params)))

    def _cells(self, job_overrides: Sequence[Sequence[str]]) -> List[List[Dict[str, Any]]]:
        """The cells ({study, game, model, seed}) each job trains: one, several for a packed
        job, none for an app without cells."""
        assert self.hydra_context is not None and self.config is not None
        loader, config = self.hydra_context.config_loader, self.config
        try:
            cells = job_cells(job_overrides, lambda overrides: loader.load_sweep_config(config, overrides))
        except Exception as e:  # the jobs are submitted: record them without their cells
            log.warning("cannot tell the cells of the jobs (%s: %s); recording them without their cells", type(e).__name__, e)
            return [[] for _ in job_overrides]
        return [[asdict(cell) for cell in job] for job in cells]

    def _record(self, jobs: List[Any], job_overrides: Sequence[Sequence[str]], submitted: float) -> None:
        assert self.config is not None
        # the sweep's command line: Hydra files hydra.* overrides apart from the task's
        sweep_overrides = list(self.config.hydra.overrides.task) + [
            o for o in self.config.hydra.overrides.hydra if not o.startswith("hydra.mode=")
        ]
        job_records.append(
            SweepDir(self.config.hydra.sweep.dir).jobs_file,
            (
                {
                    "job_id": str(job.job_id),
                    "app": self._app,
                    "stage": self.stage or self._app,
                    "executor": self._EXECUTOR,
                    "submitted": submitted,
                    "submitted_at": now(submitted),
                    "overrides": list(overrides),
                    "sweep_overrides": sweep_overrides,
                    "cell": cells[0] if cells else None,
                    "cells": cells,
                    "stdout": str(job.paths.stdout),
                    "stderr": str(job.paths.stderr),
                }
                for job, overrides, cells in zip(jobs, job_overrides, self._cells(job_overrides))
            ),
        )

    def _status_command(self) -> str:
        assert self.config is not None
        study, run_root = self.config.get("study"), self.config.get("run_root")
        if study is None or run_root is None:
            return f"see {SweepDir(self.config.hydra.sweep.dir).jobs_file}"
        return f"python -m studies.status --study {study} --run-root {run_root}"

    def _tell_how_to_follow(self, jobs: List[Any]) -> None:
        ids = sorted({str(j.job_id).split("_")[0] for j in jobs})
        if self._EXECUTOR == "slurm":
            how = f"  the queue:            squeue -j {','.join(ids)}\n  cancel them:          scancel {' '.join(ids)}"
        else:
            how = f"  they run as processes {' '.join(ids)} of this machine (kill <pid> stops one)"
        log.info(
            "Submitted %d job(s) and not waiting (hydra.launcher.wait=false).\n  where every cell is:  %s\n%s",
            len(jobs), self._status_command(), how,
        )

    def _wait_all(self, jobs: List[Any]) -> Dict[str, str]:
        """Wait until every job has a result or is gone; return {job id: why} of the jobs
        that left the queue without a trace (see `_vanished`)."""
        pending, reported, vanished = list(jobs), -1, {}
        misses: Dict[str, int] = {}
        last_check = time.monotonic()
        try:
            while True:
                pending = [job for job in pending if job.job_id not in vanished and not job.done()]
                if pending and time.monotonic() - last_check > VANISH_CHECK_S:
                    last_check = time.monotonic()
                    vanished.update(self._vanished(pending, misses))
                    pending = [job for job in pending if job.job_id not in vanished]
                if len(pending) != reported:
                    log.info("%d of %d job(s) finished%s", len(jobs) - len(pending), len(jobs),
                             "; waiting (Ctrl-C stops the waiting, not the jobs)" if pending else "")
                    reported = len(pending)
                if not pending:
                    return vanished
                time.sleep(POLL_S)
        except KeyboardInterrupt:
            log.warning("Stopped waiting; the jobs go on. Follow them with: %s", self._status_command())
            raise

    def _vanished(self, pending: List[Any], misses: Dict[str, int]) -> Dict[str, str]:
        """{job id: why} of the jobs the cluster lost track of; local processes are never lost."""
        return {}

    def _job_return(self, job: Any, overrides: Sequence[str], vanished: Dict[str, str]) -> JobReturn:
        ret = JobReturn(overrides=list(overrides), status=JobStatus.FAILED, task_name=self._app)
        if job.job_id in vanished:
            ret.return_value = CellJobDied(f"job {job.job_id} {vanished[job.job_id]}; log: {job.paths.stderr}")
            return ret
        try:
            return job.results()[0]
        except Exception as error:  # no result: the job died outside Python
            ret.return_value = CellJobDied(_why_dead(job, error))
            return ret


class FlsSlurmLauncher(_Launcher):
    _EXECUTOR = "slurm"

    def preflight(self) -> None:
        """Refuse at once on a machine without SLURM, before the sweep writes anything
        (submitit would raise 'Could not detect "srun"' after the sweep dir exists)."""
        missing = [tool for tool in ("sbatch", "srun", "squeue") if shutil.which(tool) is None]
        if missing:
            raise ValueError(
                f"launcher=slurm: {', '.join(missing)} not found on PATH; submit from a machine "
                "with SLURM's client tools (a login node), or use launcher=local / submitit_local"
            )

    def _vanished(self, pending: List[Any], misses: Dict[str, int]) -> Dict[str, str]:
        """SLURM keeps no accounting record of an array task cancelled while it waited
        (Slurm 22.05), and submitit's watcher keeps the PENDING it last read, so it would
        wait for that job forever. A job that squeue does not list, without a result and
        without an end in sacct, twice in a row, is gone."""
        try:
            queue = subprocess.run(["squeue", "-h", "-r", "-u", getpass.getuser(), "-o", "%i"],
                                   capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            return {}
        if queue.returncode != 0:
            return {}
        queued = set(queue.stdout.split())
        absent = [job for job in pending if job.job_id not in queued]
        if absent:
            absent[0].watcher.update()  # one sacct call for them all
        absent_ids = {job.job_id for job in absent}
        gone = {}
        for job in pending:
            if job.job_id in absent_ids and not job.done():
                misses[job.job_id] = misses.get(job.job_id, 0) + 1
            else:
                misses[job.job_id] = 0
            if misses[job.job_id] >= 2:
                gone[job.job_id] = "left the queue without a result and without a SLURM record (cancelled while pending?)"
        return gone


class FlsLocalLauncher(_Launcher):
    _EXECUTOR = "local"
