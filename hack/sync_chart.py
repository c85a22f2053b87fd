"""Copy into the Helm chart what it shares with the kustomize install, or check that the copies are current.

The kustomize manifests are the source: `manifests/base` (and the `crds/` it includes) and the Grafana
dashboard. A chart cannot read files outside its own directory, so `make chart` copies them in:

  * every file whose documents are all CustomResourceDefinitions -> charts/guarded-rollouts/crds/
    (Helm installs these before the templates and waits until they are established, which the
    ClusterKopfPeering object needs; they are copied verbatim);
  * every other file of manifests/base (RBAC, the ValidatingAdmissionPolicies) -> files/base/, which
    templates/base.yaml renders document by document with the release's namespace, service account
    and names;
  * the Grafana dashboard -> files/.

The file list comes from the kustomizations, so a file added to manifests/base reaches the chart
without editing this script. `--check` changes nothing and exits 1 with a diff when a copy is stale
(tests/integration/test_helm_chart.py runs it).
"""

from __future__ import annotations

import argparse
import difflib
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "guarded-rollouts"
BASE = ROOT / "manifests" / "base"
DASHBOARD = ROOT / "manifests" / "grafana" / "guarded-rollouts-dashboard.json"


def kustomize_files(directory: Path) -> list[Path]:
    """The resource files a kustomization lists, following the directories it includes."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    files: list[Path] = []
    for entry in kustomization.get("resources", []):
        path = (directory / entry).resolve()
        files += kustomize_files(path) if path.is_dir() else [path]
    return files


def only_crds(path: Path) -> bool:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    return bool(docs) and all(d.get("kind") == "CustomResourceDefinition" for d in docs)


def wanted() -> dict[Path, Path]:
    """Chart path -> source path, for every copy the chart holds."""
    copies = {}
    for source in kustomize_files(BASE):
        folder = CHART / "crds" if only_crds(source) else CHART / "files" / "base"
        copies[folder / source.name] = source
    copies[CHART / "files" / DASHBOARD.name] = DASHBOARD
    return copies


def stale(copies: dict[Path, Path]) -> list[str]:
    """A diff per copy that differs from its source, and a line per copy that has no source any more."""
    problems = []
    for target, source in sorted(copies.items()):
        have = target.read_text().splitlines(keepends=True) if target.exists() else []
        want = source.read_text().splitlines(keepends=True)
        if have != want:
            problems.append("".join(difflib.unified_diff(
                have, want, str(target.relative_to(ROOT)), str(source.relative_to(ROOT)))))
    for folder in (CHART / "crds", CHART / "files" / "base"):
        for extra in sorted(folder.glob("*.yaml")):
            if extra not in copies:
                problems.append(f"{extra.relative_to(ROOT)}: no longer in the kustomize manifests\n")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 with a diff if stale")
    args = parser.parse_args()
    copies = wanted()
    problems = stale(copies)
    if args.check:
        if problems:
            sys.stdout.write("".join(problems))
            print("the chart's copies are stale: run `make chart`", file=sys.stderr)
            return 1
        return 0
    for folder in (CHART / "crds", CHART / "files" / "base"):
        folder.mkdir(parents=True, exist_ok=True)
        for extra in folder.glob("*.yaml"):
            if extra not in copies:
                extra.unlink()
    for target, source in copies.items():
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(source.read_text())
    print(f"copied {len(copies)} files into {CHART.relative_to(ROOT)}" if problems else "the chart is current")
    return 0


if __name__ == "__main__":
    sys.exit(main())
