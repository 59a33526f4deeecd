"""The flat view of the cgroups (systemd-cgtop): every cgroup in one list with its usage, effective
limit, headroom and the share of that limit taken, sorted by usage (or any column).

It takes the tree's place (``t`` toggles them) and shares its selection: moving here moves the
tree's cursor, so the details follow, and the tree opens again on the same cgroup.  It is fed
only while it shows: the tree hands it each snapshot with the limits and headrooms it computed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from rich.text import Text
from textual.binding import Binding, BindingType
from textual.widgets import DataTable

from playground.tui.bars import level, short_size, taken_percent
from playground.tui.widgets.cgroup_tree import CHROME, MIN_WIDTH, SHARE, abbreviate_path
from wire.snapshot import Snapshot

if TYPE_CHECKING:
    from playground.tui.widgets.cgroup_tree import CgroupTree

# (key, header, width, largest first): the columns, and which way each sorts by default
COLUMNS = (
    ("cgroup", "cgroup", 0, False),
    ("usage", "usage", 10, True),
    ("limit", "limit", 10, True),
    ("headroom", "headroom", 10, False),
    ("taken", "taken", 7, True),
)
FIXED = sum(width for _, _, width, _ in COLUMNS)
ARROWS = {True: "▼", False: "▲"}


class Cell(Text):
    """A cell's text and the value it sorts by."""

    def __init__(self, text: str, value: Any, style: str | Any = "", justify: Any = None) -> None:
        super().__init__(text, style=style, justify=justify, no_wrap=True, end="")
        self.value = value


class FlatView(DataTable[Any]):
    """One row per cgroup, keyed by path; ``show`` redraws only the cells that changed and sorts
    again only when the order changes."""

    HELP = """\
## flat view

Every cgroup in one list, as `systemd-cgtop` shows them: `usage` (`misc.current`), its
effective `limit` (`↑`: an ancestor's or the EPC), `headroom` (what it can still charge before
a limit refuses it: the least room over it and its ancestors) and the share of the limit
`taken` (by it and by others under a shared limit; green below 75%, yellow below 95%, red
above).  Sorted by usage, largest first.

| key | does |
|---|---|
| `<` / `>` | sort by the column to the left / right (or click a header; again: the other way) |
| `s` | reverse the sort |
| `t` | back to the tree, on the same cgroup |
"""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("t", "tree_view", "Tree view"),
        Binding("less_than_sign", "sort_by(-1)", "Sort left", show=False),
        Binding("greater_than_sign", "sort_by(1)", "Sort right", show=False),
        Binding("s", "reverse", "Reverse sort", show=False),
    ]

    DEFAULT_CSS = """
    FlatView {
        display: none;
        height: 100%;
        border: round $primary;
        scrollbar-size-vertical: 1;
    }
    """

    def __init__(self) -> None:
        super().__init__(id="flat", cursor_type="row", cell_padding=0)
        self.sort_key = "usage"
        self.descending = True
        self.values: dict[str, tuple[Any, ...]] = {}  # what each row shows now
        self.order: list[str] = []  # the rows' order as last sorted
        self.path_width = 0
        self.following = "/"  # the cgroup the cursor is on

    def on_mount(self) -> None:
        self._add_columns()

    def _add_columns(self) -> None:
        for key, header, width, _ in COLUMNS:  # the paths' column: as wide as they are (cut to path_width)
            self.add_column(Text(header), width=width or None, key=key)
        self._title()

    @property
    def cgroup_tree(self) -> CgroupTree:
        from playground.tui.widgets.cgroup_tree import CgroupTree

        assert self.parent is not None
        return self.parent.query_children(CgroupTree).first()

    # -- opening and closing ------------------------------------------------------

    def open(self, path: str) -> None:
        """Take the tree's place, on cgroup ``path``."""
        tree = self.cgroup_tree
        self.following = path
        self.display, tree.display = True, False
        if tree.last is not None:
            self.show(*tree.last)
        self.focus()

    def action_tree_view(self) -> None:
        """Give the tree its place back, on the cgroup selected here."""
        tree = self.cgroup_tree
        self.display, tree.display = False, True
        tree.select_path(self.following)
        tree.focus()

    # -- keeping up ---------------------------------------------------------------

    def show(self, snap: Snapshot, limits: dict[str, int], rooms: dict[str, int]) -> None:
        self._fit_width()
        styles, prefixes = self.cgroup_tree.styles_for(), self.cgroup_tree.prefixes
        seen = set()
        for cg in snap["cgroups"]:
            path = cg["path"]
            seen.add(path)
            current, limit, room = int(cg["misc_current"]), limits[path], rooms[path]
            own = cg["misc_max"]
            inherited = path != "/" and (own is None or own > limit)
            prefix = prefixes.get(path, "")
            values = (path, current, limit, room, taken_percent(limit, room), inherited, prefix)
            shown = self.values.get(path)
            if shown == values:
                continue
            shade = styles[level(current, limit, room).value]
            cells = (
                Cell(abbreviate_path(path, self.path_width, prefix).ljust(self.path_width), path),
                Cell(f"{short_size(current)} ", current, justify="right"),
                Cell(f"{short_size(limit)}{'↑' if inherited else ' '}", limit, justify="right"),
                Cell(f"{short_size(room)} ", room, justify="right"),
                Cell(f"{min(999, values[4])}% ", values[4], style=shade, justify="right"),
            )
            if shown is None:
                self.add_row(*cells, key=path)
            else:  # only the cells that changed (the limit's also when its arrow did, the path's with its cut)
                changed = {i for i in range(5) if shown[i] != values[i]}
                changed |= {2} if shown[5] != inherited else set()
                changed |= {0} if shown[6] != prefix else set()
                for i in changed:
                    self.update_cell(path, COLUMNS[i][0], cells[i])
            self.values[path] = values
        for path in [p for p in self.values if p not in seen]:
            self.remove_row(path)
            del self.values[path]
        self._sort()

    def _fit_width(self) -> None:
        """As wide as the tree may be at most: the paths get what the numbers leave (a new width
        draws every row again)."""
        width = max(MIN_WIDTH, int(self.app.size.width * SHARE))
        if self.styles.width is None or self.styles.width.value != width:
            self.styles.width = width
        path_width = max(8, width - CHROME - FIXED)
        if path_width != self.path_width:
            self.path_width = path_width
            self.clear(columns=True)  # the paths' column shrinks only with its cells
            self._add_columns()
            self.values, self.order = {}, []

    def sorted_paths(self) -> list[str]:
        """The paths in the order the sort key gives (ties: in the tree's order)."""
        index = [key for key, *_ in COLUMNS].index(self.sort_key)
        return sorted(self.values, key=lambda path: self.values[path][index], reverse=self.descending)

    def _sort(self) -> None:
        order = self.sorted_paths()
        if order != self.order:
            index = [key for key, *_ in COLUMNS].index(self.sort_key)
            self.sort(key=lambda row: row[index].value, reverse=self.descending)
            self.order = order
        if self.following in self.values and self.row_count:
            row = self.get_row_index(self.following)
            if row != self.cursor_row:
                self.move_cursor(row=row, animate=False)

    # -- sorting by keys and headers ----------------------------------------------

    def action_sort_by(self, step: int) -> None:
        keys = [key for key, *_ in COLUMNS]
        self.set_sort(keys[(keys.index(self.sort_key) + step) % len(keys)])

    def action_reverse(self) -> None:
        self.descending = not self.descending
        self._resort()

    def set_sort(self, key: str) -> None:
        """Sort by column ``key``, its own way first (largest first but for paths and headroom)."""
        self.sort_key = key
        self.descending = next(largest for k, _, _, largest in COLUMNS if k == key)
        self._resort()

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        event.stop()
        key = str(event.column_key.value)
        if key == self.sort_key:
            self.action_reverse()
        else:
            self.set_sort(key)

    def _resort(self) -> None:
        self.order = []
        self._title()
        self._sort()

    def _title(self) -> None:
        for key, header, *_ in COLUMNS:
            label = f"{header}{ARROWS[self.descending]}" if key == self.sort_key else header
            label = label if key == "cgroup" else f"{label} "  # over the numbers, which end a blank early
            self.columns[key].label = Text(label, justify="left" if key == "cgroup" else "right")  # type: ignore[index]
        direction = "largest first" if self.descending else "smallest first"
        self.border_title = f"cgroups by {self.sort_key}, {direction} (t: tree)"
        self.refresh()

    # -- the selection, shared with the tree ------------------------------------------

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        event.stop()
        path = str(event.row_key.value)
        if path != self.following:
            self.following = path
            self.cgroup_tree.select_path(path)
