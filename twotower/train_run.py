"""``twotower train`` into a run directory that is a local path or an ``s3://`` / ``gs://`` URL.

TensorFlow 2.21 wheels have no filesystem for object stores, so a run on object storage is trained into a
local staging directory (``$TWOTOWER_CACHE/staging/train-*``, removed afterwards) and uploaded through
``core.storage`` (the one storage interface), in this order:

    1. during training, after every epoch: the new checkpoint's files, then ``train/checkpoints/checkpoint``
       (TensorFlow's state file naming the latest checkpoint) last, then the checkpoints it no longer lists
       are deleted (the remote state file always names a checkpoint whose files are all there);
    2. after training: ``model/manifest.json`` and ``data/manifest.json`` of a run being overwritten are
       deleted first (from here until step 5 the run does not look trained), then every old ``data/`` and
       ``model/`` object;
    3. ``config.yaml`` (the resolved config; a run not yet trained gets it before training too, so a killed
       train is resumed with ``--set train.resume=true`` alone) and ``data/`` (its manifest last);
    4. ``train/`` (summary, TensorBoard logs, the final checkpoints);
    5. ``model/`` (SavedModels, vocab, model_version), its ``manifest.json`` (model version, sha256 and size
       of every file) LAST: a run is trained exactly when ``model/manifest.json`` exists, so a train killed at
       any point leaves a run that every reader (embed, rebuild, serve, eval) refuses as unfinished.

Every manifest is written only after the size of each object it lists was checked on the store; readers check
sha256 (``core.version_cache``) before loading.

A run that already holds a trained model is refused unless ``--overwrite`` is given. ``train.resume=true``
on a run on object storage downloads ``train/checkpoints/`` into the staging directory and continues from
the latest checkpoint (as for a local run; none there: trains from the start and says so). One ``twotower
train`` at a time per run: it holds the lease ``<run>/.lease`` (``core.lifecycle``), renewed every epoch.
"""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from core import artifacts
from core.lifecycle import DEFAULT_LEASE_SECONDS, Lease, VersionedRoot
from core.rundir import RunDir
from core.storage import Storage, join_url, open_storage, upload_directory
from core.version_cache import default_cache_dir

CHECKPOINTS = "train/checkpoints"
STATE = "checkpoint"  # TensorFlow's checkpoint state file (names the latest checkpoint and the kept ones)
JOB = "twotower train"


def trained_model_version(run: RunDir) -> str | None:
    """The model version of a run that holds a finished export (``model/manifest.json``), else None."""
    if run.remote:
        try:
            raw = run.storage().read_bytes(f"model/{artifacts.MANIFEST}")
        except FileNotFoundError:
            return None
        return str(json.loads(raw).get("model_version", "?"))
    path = Path(run.model) / artifacts.MANIFEST
    return str(json.loads(path.read_text()).get("model_version", "?")) if path.is_file() else None


def check_run_target(run: RunDir, overwrite: bool) -> None:
    """Refuse a run that is already trained unless ``overwrite``; for a URL, fail early on a bad scheme,
    bucket or credentials (before any data is loaded or any step trained)."""
    if run.remote:
        storage = run.storage()  # ValueError for an unknown scheme or a URL without a bucket
        storage.list("model")  # a missing bucket, an unreachable endpoint or refused credentials fail here
    version = trained_model_version(run)
    if version is not None and not overwrite:
        raise FileExistsError(f"{run.root} already holds a trained model (model version {version}, "
                              f"{run.model}/{artifacts.MANIFEST}); pass --overwrite to train it again and replace "
                              "it, or train into a new --run")


def run_lease(run: RunDir, seconds: float = DEFAULT_LEASE_SECONDS) -> Lease:
    """The lease ``<run>/.lease``: one ``twotower train`` at a time per run (a dead holder's is taken over)."""
    storage = run.storage() if run.remote else open_storage(str(run.root))
    return Lease(VersionedRoot(storage), JOB, seconds).acquire()


# --------------------------------------------------------------------------------------------
# Checkpoints of a run on object storage


def _state_names(state_file: Path) -> set[str]:
    """Checkpoint prefixes (``ckpt-3``) named in a TensorFlow state file (relative paths, as CheckpointManager
    writes them)."""
    names = set()
    for line in state_file.read_text().splitlines():
        if ":" in line:
            value = line.split(":", 1)[1].strip().strip('"')
            names.add(Path(value).name)
    return names


def sync_checkpoints(local: Path, storage: Storage, prefix: str = CHECKPOINTS, uploaded: dict | None = None) -> dict:
    """Mirror the local checkpoint directory ``local`` to ``<prefix>/`` of ``storage``: upload the files of
    the checkpoints the local state file names (skipping ones already uploaded with the same size and
    mtime, tracked in ``uploaded``), then the state file, then delete remote checkpoint files it does not
    name. Returns ``uploaded``. Without a local state file nothing is done."""
    uploaded = {} if uploaded is None else uploaded
    state = local / STATE
    if not state.is_file():
        return uploaded
    names = _state_names(state)
    keep = sorted(p for p in local.iterdir() if p.is_file() and p.name != STATE and p.name.split(".")[0] in names)
    for path in keep:
        stamp = (path.stat().st_size, path.stat().st_mtime_ns)
        if uploaded.get(path.name) != stamp:
            storage.write_bytes(f"{prefix}/{path.name}", path.read_bytes())
            uploaded[path.name] = stamp
    storage.write_bytes(f"{prefix}/{STATE}", state.read_bytes())  # last: names only checkpoints now on the store
    wanted = {f"{prefix}/{p.name}" for p in keep} | {f"{prefix}/{STATE}"}
    for key in storage.list(prefix):
        if key not in wanted:
            storage.delete(key)
    for name in set(uploaded) - {p.name for p in keep}:
        uploaded.pop(name)
    return uploaded


def download_checkpoints(storage: Storage, local: Path, prefix: str = CHECKPOINTS) -> str | None:
    """Copy ``<prefix>/`` (the checkpoints of a run on object storage) into ``local``; returns the latest
    checkpoint's name, or None when the run has none. The state file is copied last, and only the
    checkpoints it names (a train killed while uploading leaves at most unnamed extra files)."""
    try:
        state = storage.read_bytes(f"{prefix}/{STATE}")
    except FileNotFoundError:
        return None
    local.mkdir(parents=True, exist_ok=True)
    tmp_state = local / f".{STATE}.remote"
    tmp_state.write_bytes(state)
    names = _state_names(tmp_state)
    for key in storage.list(prefix):
        name = key.rsplit("/", 1)[1]
        if name != STATE and name.split(".")[0] in names:
            artifacts.atomic_write_bytes(local / name, storage.read_bytes(key))
    tmp_state.replace(local / STATE)
    latest = [line.split(":", 1)[1].strip().strip('"') for line in state.decode().splitlines()
              if line.startswith("model_checkpoint_path:")]
    return Path(latest[0]).name if latest else None


def checkpoint_uploader(local: Path, storage: Storage, lease: Lease | None):
    """A Keras callback: after each epoch (its checkpoint already saved), ``sync_checkpoints`` and renew the
    lease (a long training keeps it)."""
    from towers.tf_env import tf

    class UploadCheckpoints(tf.keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.uploaded: dict = {}

        def on_epoch_end(self, epoch, logs=None):
            sync_checkpoints(local, storage, uploaded=self.uploaded)
            if lease is not None:
                lease.renew()

    return UploadCheckpoints()


# --------------------------------------------------------------------------------------------
# Upload of a staged run


def upload_run(staging: Path, storage: Storage) -> list[str]:
    """Upload the staged run directory ``staging`` (config.yaml, data/, train/, model/) to ``storage`` in the
    order of the module docstring, ``model/manifest.json`` last. Returns the keys written, in order."""
    for part in ("model", "data"):  # the run stops looking trained before anything of it is replaced
        storage.delete(f"{part}/{artifacts.MANIFEST}")
    for part in ("model", "data"):
        storage.delete_prefix(part)
    written = []
    config = staging / "config.yaml"
    storage.write_bytes("config.yaml", config.read_bytes())
    written.append("config.yaml")
    written += upload_directory(staging / "data", storage, "data")
    train = staging / "train"
    if train.is_dir():
        written += [k for k in upload_directory(train, storage, "train") if not k.startswith(CHECKPOINTS + "/")]
        sync_checkpoints(train / "checkpoints", storage)
    written += upload_directory(staging / "model", storage, "model")  # its manifest.json is the very last
    return written


def staging_dir(run: RunDir) -> Path:
    base = default_cache_dir().parent / "staging"
    base.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix="train-", dir=base))


def train_run(cfg, run: RunDir, overwrite: bool = False, say=print) -> dict:
    """``twotower train``: split, train, export into ``run`` (a path or a URL). Returns the training summary
    (with ``model_version``)."""
    from twotower import pipeline

    check_run_target(run, overwrite)
    lease = run_lease(run)
    try:
        if not run.remote:
            pipeline.init_run(cfg, run)
            dataset, split = pipeline.stage_data(cfg, run)
            return pipeline.stage_train(cfg, run, dataset, split)
        storage = run.storage()
        staging = staging_dir(run)
        try:
            local = RunDir(staging)
            pipeline.init_run(cfg, local)
            if trained_model_version(run) is None:  # not trained: save what runs now, as a local run does, so
                storage.write_bytes("config.yaml", local.config.read_bytes())  # a killed train resumes with it
            checkpoints = Path(local.root) / "train" / "checkpoints"
            if cfg.train.resume:
                latest = download_checkpoints(storage, checkpoints)
                say(f"resuming from {join_url(str(run.root), CHECKPOINTS, latest)}" if latest else
                    f"train.resume: {join_url(str(run.root), CHECKPOINTS)} holds no checkpoint; training from the start")
            dataset, split = pipeline.stage_data(cfg, local)
            summary = pipeline.stage_train(cfg, local, dataset, split,
                                           extra_callbacks=[checkpoint_uploader(checkpoints, storage, lease)])
            lease.renew()
            upload_run(Path(local.root), storage)
            return summary
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    finally:
        lease.release()
