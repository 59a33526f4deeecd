"""The cgroup tree: each cgroup's name, usage bar and numbers, kept in step with the engine's tree."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Tree
from textual.widgets.tree import TreeNode

from common.limits import U64_MAX
from common.units import format_size
from playground.tui.bars import effective_limits, usage_bar
from wire.snapshot import CgroupRow, Snapshot

NAME_COLUMN = 16  # where the bars start, counted from the root's name
ROOT_LABEL = "/ (all EPC)"


def parent_of(path: str) -> str:
    return path.rsplit("/", 1)[0] or "/"


class CgroupTree(Tree[str]):
    """A node per cgroup (its path as data); ``show`` adds, relabels and removes nodes."""

    def __init__(self) -> None:
        super().__init__(ROOT_LABEL, data="/", id="cgroups")
        self.root.expand()
        self.nodes: dict[str, TreeNode[str]] = {"/": self.root}
        self.made_of: dict[str, tuple[int, int, int]] = {}  # what each label was drawn from

    def show(self, snap: Snapshot) -> None:
        """Bring the tree to ``snap``: new cgroups added under their parents, changed ones
        relabelled, removed ones (a whole subtree at once, as ``rmdir a/b a`` does) taken out."""
        limits = effective_limits(snap)
        seen = set()
        for cg in snap["cgroups"]:
            path = cg["path"]
            seen.add(path)
            key = (cg["misc_current"], cg["misc_peak"], limits[path])
            if self.made_of.get(path) == key:
                continue  # unchanged: nothing to format or draw
            label = Text(self.label(cg, limits[path]))
            node = self.nodes.get(path)
            if node is None:
                parent = self.nodes.get(parent_of(path))
                if parent is None:
                    continue
                node = parent.add(label, data=path, expand=True)
                self.nodes[path] = node
            else:
                node.set_label(label)
            self.made_of[path] = key
        self.forget([path for path in self.nodes if path not in seen])

    def forget(self, paths: list[str]) -> None:
        """Take these cgroups' nodes out.  Removing a node removes its subtree, so only the
        topmost of the gone are removed; the others were detached with them."""
        gone = set(paths) - {"/"}
        for path in gone:
            if parent_of(path) not in gone:
                self.nodes[path].remove()
        for path in gone:
            del self.nodes[path]
            self.made_of.pop(path, None)

    def clear_cgroups(self) -> None:
        """Every cgroup but the root out (a new engine starts with only the root)."""
        self.forget(list(self.nodes))

    @staticmethod
    def label(cg: CgroupRow, limit: int) -> str:
        """Name, bar and numbers, the bars of every depth in one column (the tree indents 4 a level)."""
        path = cg["path"]
        name = ROOT_LABEL if path == "/" else path.rsplit("/", 1)[-1]
        width = max(4, NAME_COLUMN - 4 * (path.count("/") if path != "/" else 0))
        name = name if len(name) <= width else name[: width - 1] + "…"
        current, peak = int(cg["misc_current"]), int(cg["misc_peak"])
        shown = "max" if limit >= U64_MAX else format_size(limit)
        return f"{name:<{width}} {usage_bar(current, limit, peak)} {format_size(current)} / {shown}"
