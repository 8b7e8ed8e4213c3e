"""RobustBench's published Linf leaderboard, as shipped data (``data/robustbench_linf.json``).

The numbers are facts copied from RobustBench's ``model_info/<dataset>/Linf/<Name>.json`` files;
the file names its source, the commit of every entry and the date they were read. RobustBench
ranks an entry by ``external`` (a lower robust accuracy found by another evaluation) when it has
one, else by ``autoattack_acc``; :attr:`ReferenceEntry.robust_acc` follows that rule.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any, Optional

logger = logging.getLogger(__name__)

SNAPSHOT_FILE = "robustbench_linf.json"
#: eps written as 0.031 (7.9/255) by a few entries that RobustBench lists on its 8/255 board.
EPS_TOLERANCE = 5e-4


@dataclass(frozen=True)
class ReferenceEntry:
    """One published leaderboard row. Accuracies are percentages, as RobustBench writes them."""

    dataset: str
    name: str
    commit: str
    paper: str
    link: str
    clean_acc: float
    autoattack_acc: float
    external: Optional[float]
    additional_data: bool
    architecture: str
    venue: str
    number_forward_passes: int
    eps: str
    unreliable: bool

    @property
    def robust_acc(self) -> float:
        """The number RobustBench ranks by: ``external`` when present, else ``autoattack_acc``."""
        return self.external if self.external is not None else self.autoattack_acc

    @property
    def eps_value(self) -> float:
        """``eps`` as a number (``"8/255"`` -> 0.0314)."""
        num, _, den = self.eps.partition("/")
        return float(num) / float(den) if den else float(num)

    def source_url(self, repository: str) -> str:
        """The model-info file this entry was copied from, at its commit."""
        return f"{repository}/blob/{self.commit}/model_info/{self.dataset}/Linf/{self.name}.json"


@dataclass(frozen=True)
class Snapshot:
    """The shipped snapshot: where it comes from, its entries, and files left out (with why)."""

    repository: str
    path: str
    read_on: str
    note: str
    entries: tuple[ReferenceEntry, ...]
    skipped: tuple[dict[str, str], ...]

    def board(self, dataset: str, threat_model: str, eps: float) -> list[ReferenceEntry]:
        """The rows of one leaderboard, best first (empty when RobustBench has no such board here)."""
        if threat_model != "Linf":
            return []
        rows = [e for e in self.entries if e.dataset == dataset.lower() and abs(e.eps_value - eps) <= EPS_TOLERANCE]
        return sorted(rows, key=lambda e: (-e.robust_acc, e.name))

    def datasets(self) -> list[str]:
        """Data sets with at least one entry, in the snapshot's order."""
        return list(dict.fromkeys(e.dataset for e in self.entries))


def _entry(row: dict[str, Any]) -> ReferenceEntry:
    external = row.get("external")
    return ReferenceEntry(
        dataset=row["dataset"], name=row["name"], commit=row["commit"], paper=row["paper"].strip(),
        link=row["link"], clean_acc=float(row["clean_acc"]), autoattack_acc=float(row["autoattack_acc"]),
        external=float(external) if external not in (None, "") else None,
        additional_data=bool(row["additional_data"]), architecture=row["architecture"], venue=row["venue"],
        number_forward_passes=int(row["number_forward_passes"]), eps=row["eps"],
        unreliable=bool(row.get("unreliable", False)))


@lru_cache(maxsize=1)
def load_snapshot() -> Snapshot:
    """The snapshot shipped inside the package (read once)."""
    text = resources.files("robust_mix.leaderboard").joinpath("data", SNAPSHOT_FILE).read_text(encoding="utf-8")
    data = json.loads(text)
    source = data["source"]
    return Snapshot(repository=source["repository"], path=source["path"], read_on=source["read_on"],
                    note=source["note"], entries=tuple(_entry(row) for row in data["entries"]),
                    skipped=tuple(data.get("skipped", ())))
