"""Writes notebooks/quickstart.ipynb and notebooks/analyse_sweep.ipynb (and patches
explore_checkpoint.ipynb to honour $GENLAB_CKPT)."""
import json
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

NB = Path("/work/main/notebooks")

quick = new_notebook(cells=[
    new_markdown_cell(
        "# Quickstart: compose a config, train a tiny model, sample from it\n\n"
        "The same `genlab.train.run(cfg)` that `python train.py` calls, driven from Python: "
        "compose the Hydra config with overrides, train for a few batches on the shipped MNIST, "
        "read the logged metrics and draw samples from the best checkpoint. Runs in about a "
        "minute on a laptop CPU.\n\n"
        "Setup: `pip install -e \".[dev,notebooks]\"` then `jupyter notebook notebooks/`."
    ),
    new_code_cell(
        "import csv\nimport tempfile\nfrom pathlib import Path\n\n"
        "import matplotlib.pyplot as plt\nimport torch\n"
        "from hydra import compose, initialize_config_dir\n"
        "from omegaconf import OmegaConf, open_dict\n"
        "from torchvision.utils import make_grid\n\n"
        "from genlab.train import run\n"
        "from genlab.utils.checkpoint import load_model\n"
        "from genlab.utils.resolvers import project_root\n\n"
        "# Any override you would type after `python train.py` works here.\n"
        "overrides = [\n"
        "    \"model=vae\",\n"
        "    \"trainer=cpu\",\n"
        "    \"debug=limit\",  # 2 epochs of 5 batches: a smoke run, not a good model\n"
        "    \"data.train_fraction=0.05\",\n"
        "    \"model.encoder.width=16\",\n"
        "    \"model.decoder.width=16\",\n"
        "    \"callbacks.progress_bar=null\",\n"
        "    \"callbacks.fid.num_samples=256\",\n"
        "    \"callbacks.fid.test_num_samples=256\",\n"
        "    \"callbacks.fid.num_real=512\",  # real images for FID (default: the whole split)\n"
        "    \"data.batch_size=32\",\n"
        "    \"extras.print_config=false\",\n"
        "]\n"
        "with initialize_config_dir(config_dir=f\"{project_root()}/conf\", version_base=\"1.3\"):\n"
        "    cfg = compose(\"train\", overrides=overrides)\n"
        "print(OmegaConf.to_yaml(cfg.model))"
    ),
    new_code_cell(
        "# Outside `python train.py` Hydra does not create a run directory: pick one.\n"
        "with open_dict(cfg):\n"
        "    cfg.paths.output_dir = tempfile.mkdtemp(prefix=\"genlab-quickstart-\")\n"
        "best = run(cfg)\n"
        "print(f\"best {cfg.model.monitor} = {best:.2f}; run dir: {cfg.paths.output_dir}\")"
    ),
    new_code_cell(
        "# metrics.csv holds every logged value (one row per step or epoch).\n"
        "run_dir = Path(cfg.paths.output_dir)\n"
        "with open(run_dir / \"metrics.csv\") as f:\n"
        "    rows = list(csv.DictReader(f))\n"
        "train = [(int(r[\"step\"]), float(r[\"train/elbo\"])) for r in rows if r.get(\"train/elbo\")]\n"
        "plt.plot([s for s, _ in train], [v for _, v in train], marker=\".\")\n"
        "plt.xlabel(\"step\")\nplt.ylabel(\"train/elbo (nats)\")\n"
        "assert len(train) >= 5 and all(torch.isfinite(torch.tensor(v)) for _, v in train)"
    ),
    new_code_cell(
        "# Checkpoints carry their config: load_model needs nothing but the path.\n"
        "model, _ = load_model(run_dir / \"checkpoints\" / \"last.ckpt\")\n"
        "samples = model.sample(64, generator=torch.Generator().manual_seed(0))\n"
        "assert samples.shape == (64, 1, 28, 28) and 0 <= samples.min() <= samples.max() <= 1\n"
        "plt.figure(figsize=(5, 5))\n"
        "plt.imshow(make_grid(samples, nrow=8).permute(1, 2, 0))\nplt.axis(\"off\");"
    ),
])

sweep = new_notebook(cells=[
    new_markdown_cell(
        "# Analyse a sweep\n\n"
        "Read a multirun directory (`python train.py -m ...`, an Optuna search or "
        "`experiment=data_scaling`) without W&B: one row per job with its overrides, status, "
        "best monitor value and test metrics; plots of a metric against each swept parameter; "
        "then samples from the best job's checkpoint. The same table is what "
        "`python -m genlab.sweeps summarize <dir>` prints.\n\n"
        "Set `sweep_dir` below, or leave it to pick the newest multirun under `outputs/`."
    ),
    new_code_cell(
        "import csv\nimport os\nfrom pathlib import Path\n\n"
        "import matplotlib.pyplot as plt\nimport torch\n"
        "from IPython.display import Image, Markdown, display\n"
        "from torchvision.utils import make_grid\n\n"
        "from genlab.sweeps import summarize\n"
        "from genlab.utils.checkpoint import load_model\n"
        "from genlab.utils.resolvers import project_root\n\n"
        "sweep_dir = os.environ.get(\"GENLAB_SWEEP_DIR\")  # or e.g. \"outputs/train/multiruns/<time>\"\n"
        "if sweep_dir is None:\n"
        "    sweeps = sorted(Path(project_root()).glob(\"outputs/*/multiruns/*/multirun.yaml\"))\n"
        "    if not sweeps:\n"
        "        raise FileNotFoundError(\"No multiruns under outputs/: run `python train.py -m ...` first.\")\n"
        "    sweep_dir = max(sweeps, key=lambda p: p.stat().st_mtime).parent\n"
        "summary = summarize(sweep_dir)\n"
        "display(Markdown(summary[\"markdown\"]))"
    ),
    new_code_cell(
        "# One PNG per swept parameter (written next to the jobs).\n"
        "for path in summary[\"plots\"]:\n"
        "    display(Image(filename=str(path)))"
    ),
    new_code_cell(
        "# The same numbers as a list of dicts, for your own plots.\n"
        "with open(Path(sweep_dir) / \"summary.csv\") as f:\n"
        "    rows = list(csv.DictReader(f))\n"
        "print(len(rows), \"jobs; columns:\", list(rows[0]))"
    ),
    new_code_cell(
        "# Samples from the best job's best checkpoint.\n"
        "best = summary[\"best\"]\n"
        "assert best is not None, \"no job finished\"\n"
        "print(f\"best job {best.num}:\", best.overrides)\n"
        "model, _ = load_model(best.result[\"best_model_path\"])\n"
        "samples = model.sample(64, generator=torch.Generator().manual_seed(0))\n"
        "plt.figure(figsize=(5, 5))\n"
        "plt.imshow(make_grid(samples, nrow=8).permute(1, 2, 0))\nplt.axis(\"off\");"
    ),
])
for nb in (quick, sweep):
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
nbformat.write(quick, NB / "quickstart.ipynb")
nbformat.write(sweep, NB / "analyse_sweep.ipynb")

path = NB / "explore_checkpoint.ipynb"
nb = nbformat.read(path, as_version=4)
src = nb.cells[1].source
old = 'ckpt_path = None  # e.g. "outputs/train/runs/<time>/checkpoints/last.ckpt"'
new = 'ckpt_path = os.environ.get("GENLAB_CKPT")  # or e.g. "outputs/train/runs/<time>/checkpoints/last.ckpt"'
assert old in src
src = src.replace(old, new).replace("from pathlib import Path\n", "import os\nfrom pathlib import Path\n")
nb.cells[1].source = src
nbformat.write(nb, path)
