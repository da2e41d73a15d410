"""What the expert-parallel tests share: the mpirun command line and the environment."""
import os
import shutil


def mpirun(np):
    """The launcher prefix for np ranks (none for one process)."""
    return [] if np == 1 else ["mpirun", "-np", str(np), "--oversubscribe", "--bind-to", "none"]


def setup(work=None):
    """mpirun may run as root in CI containers; one OpenMP thread per rank; a fresh work folder."""
    os.environ.setdefault("OMPI_ALLOW_RUN_AS_ROOT", "1")
    os.environ.setdefault("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
    os.environ["OMP_NUM_THREADS"] = "1"
    if work:
        shutil.rmtree(work, ignore_errors=True)
        os.makedirs(work)
