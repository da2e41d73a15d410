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


def write_corpus(path):
    """A few kilobytes of text with some structure: numbered sentences over a small vocabulary."""
    words = ("the expert router sends each token to a few experts while the shared expert sees "
             "every token and the balance loss keeps the load even across all experts").split()
    lines = []
    for i in range(1500):
        lines.append(" ".join(words[(i * k + 3) % len(words)] for k in range(1, 9)) + ".")
    with open(path, "w") as f:
        f.write("\n".join(lines))


def read_metrics(out):
    """metrics.jsonl of a training run: ({step: line}, the final line)."""
    import json
    steps, final = {}, None
    for line in open(os.path.join(out, "metrics.jsonl")):
        j = json.loads(line)
        if j.get("final"):
            final = j
        else:
            steps[j["step"]] = j
    return steps, final


def rel(a, b):
    return abs(a - b) / max(abs(b), 1e-30)
