"""Training recipes as YAML files: ``certkit train --config recipe.yaml`` (or the name of a shipped recipe).

A recipe maps ``certkit train`` option names (``lr-milestones`` or ``lr_milestones``) to values, lists allowed where
the option takes a comma list (``hidden: [256, 256]``). Options given on the command line override the file; the
checkpoint records the full resolved settings (metadata ``recipe``). Shipped recipes live in train/recipes/.
"""
from __future__ import annotations

from pathlib import Path

from certkit.common.errors import CertkitError

RECIPES_DIR = Path(__file__).resolve().parent / "recipes"


def shipped_recipes() -> list[str]:
    """Names of the recipes shipped with certkit (file stems in train/recipes/)."""
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))


def recommended_recipe(method: str, dataset: str) -> str | None:
    """The shipped recipe marked ``recommended: true`` for ``method`` on ``dataset`` (what a bare ``certkit train
    --method M --dataset D`` starts from), or None."""
    return recommended_recipes().get((method, dataset))


def recommended_recipes() -> dict[tuple[str, str], str]:
    """{(method, dataset): recipe name} of every recommended shipped recipe."""
    import yaml

    out = {}
    for path in sorted(RECIPES_DIR.glob("*.yaml")):
        data = yaml.safe_load(path.read_text())
        if isinstance(data, dict) and data.get("recommended") is True:
            out[(str(data.get("method")), str(data.get("dataset")))] = path.stem
    return out


def load_recipe(spec: str) -> dict:
    """The options of a recipe file or shipped recipe name, keys normalised to option names with underscores and
    lists joined with commas.

    Raises:
        CertkitError: no such file or recipe, invalid YAML, not a mapping of option names to values.
    """
    import yaml

    path = Path(spec)
    if not path.is_file():
        shipped = RECIPES_DIR / f"{spec}.yaml"
        if not shipped.is_file():
            raise CertkitError(f"--config {spec}: no such file nor shipped recipe (shipped: "
                               f"{', '.join(shipped_recipes())})")
        path = shipped
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise CertkitError(f"cannot read the recipe {path}: {' '.join(str(e).split())[:200]}") from None
    if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
        raise CertkitError(f"the recipe {path} must be a mapping of `certkit train` option names to values")
    out = {}
    data.pop("recommended", None)  # marks the recipe a bare run of its method and data set starts from
    for key, value in data.items():
        if isinstance(value, (list, tuple)):
            value = ",".join(str(v) for v in value)
        if isinstance(value, dict):
            raise CertkitError(f"the recipe {path}: option {key!r} takes a value, not a mapping")
        out[key.strip().lstrip("-").replace("-", "_")] = value
    return out
