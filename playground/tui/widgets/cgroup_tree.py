"""The cgroup tree: each cgroup's name, usage bar and numbers, kept in step with the engine's tree.

It reads at a glance (issue 13): the panel is as wide as its widest line needs, up to 55% of
the screen; a name is cut, in the middle, only when it must be, what it shares with its
parent or a sibling first (``…pod7c1f0d2…ca5e2.slice`` for ``kubepods-burstable-pod<uid>.slice``);
every bar starts in one column whatever the depth; a bar shows the room left under the
tightest ancestor (the headroom siblings share) and is green, yellow or red by how much of
the effective limit is taken, with the percentage beside it for a screen without colour.
The root's line shows the node total: the limits the top-level cgroups promise, against the
EPC.  ``show`` runs four times a second: it formats and redraws only the lines whose
figures changed.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable
from dataclasses import dataclass
from typing import ClassVar, Protocol, cast

from rich.color import Color as RichColor
from rich.style import Style
from rich.text import Span, Text
from textual.binding import Binding, BindingType
from textual.color import Color
from textual.widgets import Tree
from textual.widgets.tree import TreeNode

from common.limits import U64_MAX
from playground.tui.bars import (
    BAR,
    LIMIT_0,
    Level,
    bar_runs,
    compact_size,
    level,
    limits_and_rooms,
    node_total,
    parent_of,
    room_shown,
    short_size,
    taken_percent,
)
from wire.snapshot import CgroupRow, Snapshot

ROOT_LABEL = "/ (all EPC)"
TOGGLE = Style.from_meta({"toggle": True})  # a click on the arrow toggles (Textual's own meta)
GUIDE = 3  # cells of indentation a level (the tree's guide_depth)
ICON = 2  # the expand arrow, or as many blanks on a leaf
SHARE = 0.55  # of the screen's width the panel may take
CHROME = 3  # the panel's border (2) and its scrollbar's gutter (1)
MIN_WIDTH = 32  # the panel's least width, chrome included
BAR_MIN = len(LIMIT_0)
BAR_NARROW = 10  # the bar shrinks to this before the percentage goes
NAME_MIN = 4  # a name is never cut shorter (a line that deep overflows instead)
SIZE = 9  # a size's column (bars.short_size: at most 9 characters)
NUMBERS = 1 + SIZE + 3 + SIZE + 1  # " 127.9 MiB / 128 MiB↑"
COMPACT = 6  # a compact size's column (bars.compact_size)
NUMBERS_COMPACT = 1 + COMPACT + 1 + COMPACT + 1  # " 127.9M/128M↑"
PERCENT = 5  # "  83%"
INHERITED = "↑"  # the limit shown is an ancestor's (or the EPC): the cgroup has none of its own


class Companion(Protocol):
    """A view that can take the tree's place (the flat view, ``#flat``; it imports this module)."""

    display: bool

    def show(self, snap: Snapshot, limits: dict[str, int], rooms: dict[str, int]) -> None: ...

    def open(self, path: str) -> None: ...


def abbreviate(name: str, width: int, prefix: str = "") -> str:
    """``name`` in ``width`` characters: whole when it fits; else without ``prefix`` (a start it
    shares with its parent or a sibling: ``…pod7c1f0d2e_5b3a….slice``), cut in the middle when
    still too long, keeping a little more of the end (``.slice``, ``.scope``, a distinct tail)."""
    if len(name) <= width:
        return name
    if width <= 1:
        return "…"[:width]
    if prefix and name.startswith(prefix) and width >= 8:
        return "…" + abbreviate(name[len(prefix) :], width - 1)
    tail = width // 2
    return name[: width - 1 - tail] + "…" + name[len(name) - tail :]


def abbreviate_path(path: str, width: int, prefix: str = "") -> str:
    """A cgroup's path in ``width`` characters: whole when it fits; else its name whole and as
    much of the start as fits (``/kubepods…/burstable.slice``), or its name cut (``…/…9f2c…scope``:
    ``prefix`` as abbreviate takes it)."""
    if len(path) <= width:
        return path
    head, _, name = path.rpartition("/")
    if len(name) + 2 <= width:
        return head[: width - len(name) - 2] + "…/" + name
    return "…/" + abbreviate(name, width - 2, prefix) if width > 4 else abbreviate(path, width)


SEPARATORS = "-_."


def shared_prefixes(names: Iterable[str], parent: str) -> dict[str, str]:
    """For each of these sibling names, the start it shares with its parent's name (systemd's
    ``kubepods-burstable-`` of ``kubepods-burstable-pod<uid>.slice`` under
    ``kubepods-burstable.slice``) or with a sibling (``cri-containerd-``), to its last separator
    and at least 4 characters long, or "": what a name that must be cut leaves out first."""
    stem = parent.removesuffix(".slice") + "-" if parent.endswith(".slice") else ""
    order = sorted(names)
    prefixes = {}
    for i, name in enumerate(order):
        shared = len(stem) if stem and name.startswith(stem) else 0
        for other in order[max(0, i - 1) : i] + order[i + 1 : i + 2]:  # the nearest in order share the most
            same = 0
            for a, b in zip(name, other, strict=False):
                if a != b:
                    break
                same += 1
            shared = max(shared, same)
        cut = max((j + 1 for j in range(min(shared, len(name) - 1)) if name[j] in SEPARATORS), default=0)
        prefixes[name] = name[:cut] if cut >= 4 else ""
    return prefixes


def depth_of(path: str) -> int:
    return 0 if path == "/" else path.count("/")


def name_of(path: str) -> str:
    return ROOT_LABEL if path == "/" else path.rsplit("/", 1)[-1]


@dataclass(frozen=True, slots=True)
class Layout:
    """Where the columns of every line are, in cells from the tree's left edge."""

    names_end: int  # guides, arrow and name: where the bars start (less one blank)
    bar: int
    percent: bool
    compact: bool = False  # numbers as ``12.1M/24M`` rather than ``12.1 MiB / 24 MiB``

    @property
    def line(self) -> int:
        """The width of a line."""
        numbers = NUMBERS_COMPACT if self.compact else NUMBERS
        return self.names_end + 1 + self.bar + (PERCENT if self.percent else 0) + numbers

    def name_width(self, depth: int, name: str = "") -> int:
        """The name's column at ``depth``: never less than ``name`` or NAME_MIN needs (a line that
        deep overflows instead)."""
        return max(self.names_end - GUIDE * depth - ICON, min(len(name), NAME_MIN))

    def numbers(self, current: int, limit: int) -> str:
        """`` 12.1 MiB / 24 MiB`` (the usage right-aligned), or `` 12.1M/24M``."""
        if self.compact:
            return f" {compact_size(current):>{COMPACT}}/{compact_size(limit)}"
        return f" {short_size(current):>{SIZE}} / {short_size(limit)}"


# What may give way when a line does not fit, in order: (names cut to at most this many
# characters or None: whole, the least bar, the percentage shown, the numbers compact).
FALLBACKS = (
    (None, BAR, True, False),
    (None, BAR_NARROW, True, False),
    (24, BAR, True, False),
    (24, BAR_NARROW, True, False),
    (None, BAR_MIN, False, False),
    (16, BAR_NARROW, True, False),
    (None, BAR_NARROW, True, True),
    (16, BAR_MIN, False, False),
    (None, BAR_MIN, False, True),
    (16, BAR_NARROW, True, True),
    (16, BAR_MIN, False, True),
    (12, BAR_MIN, False, True),
)


def plan_layout(names: Iterable[tuple[int, str]], room: int, root: tuple[str, ...] = (ROOT_LABEL,)) -> Layout:
    """The columns for cgroups of these (depth, name) under the root, whose name is one of
    ``root`` (longest first: root_names), in ``room`` cells: names whole (the root's longest), a
    bar of 16 and the percentage when they fit; else, step by step (FALLBACKS), a narrower bar,
    long names cut to 24 characters (the root's shortest form), no percentage, names cut to 16,
    compact numbers, names cut to 12; at last the names get what a bar of 7 and the numbers
    leave.  The numbers always stay.  Names that are cut get all the room the rest leaves."""
    spans = [(GUIDE * depth + ICON, len(name)) for depth, name in names]
    whole = max([ICON + len(root[0])] + [indent + length for indent, length in spans])
    for cut, least_bar, percent, compact in FALLBACKS:
        names_end = whole
        if cut is not None:
            names_end = max([ICON + len(root[-1])] + [indent + min(length, cut) for indent, length in spans])
        rest = Layout(0, 0, percent, compact).line - 1
        bar = min(BAR, room - names_end - 1 - rest)
        if bar >= least_bar:
            return Layout(min(whole, room - 1 - bar - rest), bar, percent, compact)
    rest = Layout(0, 0, False, True).line - 1
    return Layout(max(ICON + NAME_MIN, room - 1 - BAR_MIN - rest), BAR_MIN, False, True)


def root_names(promised: int | None, capacity: int) -> tuple[str, ...]:
    """The root's names, longest first: with the node total (``/ limits 192 MiB = 1.5x``: the EPC
    the top-level cgroups' limits promise, against the EPC), shorter (``/ limits 1.5x``); or, with
    no cgroup yet (``promised`` None), ``/ (all EPC)``.  Its line shows the longest that fits."""
    if promised is None:
        return (ROOT_LABEL,)
    ratio = f"{promised / capacity:.1f}x" if capacity else "-"
    return (f"/ limits {short_size(promised)} = {ratio}", f"/ limits {ratio}")


class CgroupTree(Tree[str]):
    """A node per cgroup (its path as data); ``show`` adds, relabels and removes nodes."""

    HELP = """\
## cgroup tree

Each line: the cgroup's name, a bar of its `misc.current` against its **effective limit**
(the smallest `misc.max` from it up to the root, or the whole EPC), how much of that limit is
taken, and `usage / effective limit`.

| glyph | means |
|---|---|
| `█` | EPC this cgroup uses (`misc.current`) |
| `░` | room left: what it can still charge before a limit refuses it |
| `▒` | taken by others: part of its limit that siblings or cousins hold under an ancestor's limit it shares |
| `┃` | its peak (`misc.peak`) |
| `limit 0` | `misc.max` is 0 here or above: nothing can be charged |
| `83%` | the share of the effective limit taken (its own use and `▒`): green below 75%, yellow below 95%, red above |
| `↑` | the limit shown is an ancestor's, or the EPC: this cgroup's own `misc.max` is `max` or higher |
| `▼` / `▶` | expanded / collapsed; a cgroup without children has no arrow |
| `…` | a long name cut in the middle; the details panel shows the full path |

The root's line shows the **node total**: `limits 192 MiB = 1.5x` is the EPC the top-level
cgroups' limits promise (a cgroup without a limit promises what its children do, or the whole
EPC when it has none) against the EPC: above `1.0x` the node is overcommitted.

| key | does |
|---|---|
| `up` / `down` | move; the details follow the selected cgroup |
| `enter` / `space` | expand or collapse (a click selects; a click on the arrow toggles) |
| `left` / `h` / `backspace` | to the parent |
| `right` | expand, or to the first child |
| `+` / `-` | expand all / collapse all |
| `t` | the flat view: every cgroup in one list sorted by usage (systemd-cgtop) |
"""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "toggle_node", "Toggle", show=False),
        Binding("left,h,backspace", "cursor_parent", "Parent", show=False),
        Binding("right", "expand_or_child", "Expand", show=False),
        Binding("plus,equals_sign", "expand_all", "Expand all", show=False),
        Binding("minus", "collapse_all", "Collapse all", show=False),
        Binding("t", "flat_view", "Flat view"),
    ]

    DEFAULT_CSS = """
    CgroupTree {
        scrollbar-size-vertical: 1;
        scrollbar-gutter: stable;
        overflow-x: hidden;
    }
    """

    def __init__(self) -> None:
        super().__init__(ROOT_LABEL, data="/", id="cgroups")
        self.guide_depth = GUIDE
        self.auto_expand = False  # a click selects; enter, space or the arrow toggle
        self.root.expand()
        self.root.allow_expand = False  # a leaf until a cgroup is made under it
        self.nodes: dict[str, TreeNode[str]] = {"/": self.root}
        self.made_of: dict[str, tuple[object, ...]] = {}  # what each label was drawn from
        self.cols = Layout(ICON + len(ROOT_LABEL), BAR, True)
        self.layout_of: tuple[object, ...] = ()  # what the layout was planned from: () plans again
        self.drawn = 0  # how many layouts (and themes) the labels have had: a new one draws them all
        self.short: dict[str, str] = {}  # each cgroup's name as its line shows it
        self.prefixes: dict[str, str] = {}  # what each name shares with its parent or a sibling (shared_prefixes)
        self.total: int | None = None  # the node total (bars.node_total)
        self.total_of: list[object] = []  # what it was summed from
        self.width = 0  # the panel's, in cells
        self.last: tuple[Snapshot, dict[str, int], dict[str, int]] | None = None  # for the flat view
        self._rows: list[CgroupRow] = []  # the rows last drawn (kept: their identity tells them unchanged)
        self._flat: Companion | None = None
        self._flat_looked = False  # for the flat view
        self.select_when_shown = ""  # a cgroup to select once it is in the tree (the one `n` made)
        self._theme = ""
        self._styles: dict[str, Style] = {}

    # -- keeping up with the engine ---------------------------------------------

    def show(self, snap: Snapshot) -> None:
        """Bring the tree to ``snap``: new cgroups added under their parents, changed ones
        relabelled, removed ones (a whole subtree at once, as ``rmdir a/b a`` does) taken out."""
        cgroups = snap["cgroups"]
        if self.last is not None and self._same_as_before(snap):
            self.last = (snap, *self.last[1:])  # an idle engine: the feed kept every row as it was
            self._select_when_shown()
            return
        self._rows = list(cgroups)
        limits, rooms = limits_and_rooms(snap)
        self.last = (snap, limits, rooms)
        self._add_and_forget(cgroups)
        names = root_names(self._node_total(snap), int(snap["capacity"]))
        layout = self._plan(names)
        self.styles_for()  # the theme's, once for every label below
        root = next((name for name in names if len(name) <= layout.name_width(0)), names[-1])
        relabelled = False
        for cg in cgroups:
            path = cg["path"]
            node = self.nodes.get(path)
            if node is None:
                continue  # its parent is not in the tree (cannot happen: cgroups come in pre-order)
            limit, room = limits[path], rooms[path]
            inherited = path != "/" and (cg["misc_max"] is None or cg["misc_max"] >= U64_MAX or cg["misc_max"] > limit)
            name = root if path == "/" else self.short.get(path, "")
            seen = room_shown(cg["misc_current"], limit, room, layout.bar)
            key = (cg["misc_current"], cg["misc_peak"], limit, seen, inherited, self.drawn, name)
            if self.made_of.get(path) == key:
                continue  # unchanged: nothing to format or draw
            # TreeNode.set_label, but for the one refresh below: set_label schedules a callback per node
            # (siblings share headroom, so a tick relabels a few hundred of 1,000 cgroups); the tree's
            # line cache is keyed on each node's _updates, so the lines of the others stay cached.
            node._label = self.process_label(self.label(cg, limit, room, inherited, name))
            node._updates += 1
            self.made_of[path] = key
            relabelled = True
        if relabelled:
            self.refresh()
        self._fit_width(layout.line)
        self._select_when_shown()
        flat = self.flat_view()
        if flat is not None and flat.display:
            flat.show(snap, limits, rooms)

    def _same_as_before(self, snap: Snapshot) -> bool:
        """The very rows drawn last time (the feed keeps the rows a stats message did not change),
        on the same EPC, screen width and theme: nothing to compute or draw."""
        last, cgroups = self.last, snap["cgroups"]
        return (
            last is not None
            and len(cgroups) == len(self._rows)
            and snap["capacity"] == last[0]["capacity"]
            and self.layout_of[:2] == (self._room(), self.app.theme)
            and all(map(operator.is_, cgroups, self._rows))
        )

    def _select_when_shown(self) -> None:
        if self.select_when_shown in self.nodes:
            self.select_path(self.select_when_shown)
            self.select_when_shown = ""

    def _node_total(self, snap: Snapshot) -> int | None:
        """bars.node_total, summed again only when a limit or the cgroups changed; None: no cgroup."""
        cgroups = snap["cgroups"]
        made_of: list[object] = [snap["capacity"]]
        made_of += [(cg["path"], cg["misc_max"]) for cg in cgroups]
        if made_of != self.total_of:
            self.total_of = made_of
            self.total = node_total(snap) if len(cgroups) > 1 else None
        return self.total

    def _add_and_forget(self, cgroups: list[CgroupRow]) -> None:
        """New cgroups' nodes added (as leaves: a parent gets its arrow with its first child),
        gone ones removed."""
        nodes = self.nodes
        if len(cgroups) == len(nodes) and all(cg["path"] in nodes for cg in cgroups):
            return  # the same cgroups (the usual tick)
        seen = set()
        for cg in cgroups:
            path = cg["path"]
            seen.add(path)
            if path in nodes:
                continue
            parent = self.nodes.get(parent_of(path))
            if parent is None:
                continue
            self.nodes[path] = parent.add(name_of(path), data=path, expand=True, allow_expand=False)
            if not parent.allow_expand:
                parent.allow_expand = True
            self.layout_of = ()  # the widest name may be this one
        if len(seen) != len(self.nodes):
            self.forget([path for path in self.nodes if path not in seen])

    def forget(self, paths: list[str]) -> None:
        """Take these cgroups' nodes out.  Removing a node removes its subtree, so only the
        topmost of the gone are removed; the others were detached with them.  A parent left
        without children loses its arrow."""
        gone = set(paths) - {"/"}
        for path in gone:
            if parent_of(path) not in gone:
                self.nodes[path].remove()
        for path in gone:
            del self.nodes[path]
            self.made_of.pop(path, None)
        for path in {parent_of(path) for path in gone} - gone:
            parent = self.nodes.get(path)
            if parent is not None and not parent.children and parent.allow_expand:
                parent.allow_expand = False
        if gone:
            self.layout_of = ()  # the widest name may have gone

    def clear_cgroups(self) -> None:
        """Every cgroup but the root out (a new engine starts with only the root)."""
        self.forget(list(self.nodes))

    # -- the columns and the panel's width ------------------------------------

    def _room(self) -> int:
        """The widest a line may be: the panel's share of the screen, less its border and gutter."""
        return max(MIN_WIDTH, int(self.app.size.width * SHARE)) - CHROME

    def _plan(self, root: tuple[str, ...]) -> Layout:
        """The layout, planned again when the cgroups, the screen's width, the theme or the root's
        names' lengths changed; when the columns moved or the colours changed, every label is
        drawn again."""
        made_from = (self._room(), self.app.theme, *map(len, root))
        if made_from != self.layout_of:
            names = ((depth_of(path), name_of(path)) for path in self.nodes if path != "/")
            layout = plan_layout(names, self._room(), root)
            if layout != self.cols or made_from[1] != self._theme:
                self.drawn += 1
            self.cols, self.layout_of = layout, made_from
            self._shorten()
        return self.cols

    def _shorten(self) -> None:
        """Every cgroup's name as its line shows it (cut to its column, in the middle, what it
        shares with its parent or a sibling left out first)."""
        siblings: dict[str, list[str]] = {}
        for path in self.nodes:
            if path != "/":
                siblings.setdefault(parent_of(path), []).append(path)
        self.short, self.prefixes = {"/": ROOT_LABEL}, {}
        for parent, paths in siblings.items():
            prefixes = shared_prefixes((name_of(path) for path in paths), name_of(parent))
            for path in paths:
                name = name_of(path)
                self.prefixes[path] = prefixes[name]
                self.short[path] = abbreviate(name, self.cols.name_width(depth_of(path), name), prefixes[name])

    def _fit_width(self, content: int) -> None:
        """The panel as wide as its widest line, within its share of the screen."""
        width = max(MIN_WIDTH, min(content, self._room()) + CHROME)
        if width != self.width:
            self.width = width
            self.styles.width = width

    # -- drawing a line ---------------------------------------------------------

    def styles_for(self) -> dict[str, Style]:
        """The bar's parts and the levels, in the theme's colours (green, yellow, red: success,
        warning, error)."""
        if self._theme != self.app.theme or not self._styles:
            variables = self.app.theme_variables

            def colour(name: str) -> RichColor | None:
                """A theme colour as Rich takes it: one with alpha blended over the surface."""
                value = variables.get(name)
                if not value:
                    return None
                parsed = Color.parse(value)
                if parsed.a < 1:
                    parsed = Color.parse(variables.get("surface", "black")) + parsed
                return parsed.rich_color

            muted = Style(color=colour("foreground-muted"))
            error = Style(color=colour("error"), bold=True)
            self._styles = {
                Level.OK.value: Style(color=colour("success")),
                Level.HIGH.value: Style(color=colour("warning")),
                Level.FULL.value: error,
                "room": Style(color=colour("foreground-disabled")),  # faint: nothing there
                "others": muted,  # fainter than the usage, plainer than the room
                "peak": Style(bold=True),
                "limit0": error + Style(reverse=True),
                "muted": muted,
            }
            self._theme = self.app.theme
        return self._styles

    def label(self, cg: CgroupRow, limit: int, room: int, inherited: bool = False, name: str = "") -> Text:
        """Name (by default the cgroup's, cut to its column), bar, share taken and numbers, in the
        layout's columns (the bars of every depth in one column)."""
        path, layout, styles = cg["path"], self.cols, self._styles or self.styles_for()
        current, peak = int(cg["misc_current"]), int(cg["misc_peak"])
        shade = styles[level(current, limit, room).value]
        name = name or self.short.get(path) or name_of(path)
        width = layout.name_width(depth_of(path), name)
        plain, spans = [abbreviate(name, width).ljust(width), " "], []
        start = width + 1  # one Text made at once: appending piece by piece costs 3 times as much
        for run, part in bar_runs(current, limit, peak, layout.bar, room):
            plain.append(run)
            spans.append(Span(start, start + len(run), shade if part == "used" else styles[part]))
            start += len(run)
        if layout.percent:
            plain.append(f" {min(999, taken_percent(limit, room)):>3}%")
            spans.append(Span(start, start + PERCENT, shade))
            start += PERCENT
        numbers = layout.numbers(current, limit)
        plain.append(numbers)
        if inherited:
            plain.append(INHERITED)
            spans.append(Span(start + len(numbers), start + len(numbers) + 1, styles["muted"]))
        return Text("".join(plain), no_wrap=True, end="", spans=spans)

    def process_label(self, label: str | Text) -> Text:
        """A label as it is (Textual's splits each into lines: a copy; a cgroup's name has no newline)."""
        return label if isinstance(label, Text) else super().process_label(label)

    def render_label(self, node: TreeNode[str], base_style: Style, style: Style) -> Text:
        """The arrow on a cgroup with children; on a leaf, as many blanks (the columns stay).  The
        cursor's and the hover's style go on the name only: the bar keeps its colours."""
        label = node._label.copy()
        label.stylize(style, 0, self.cols.name_width(depth_of(node.data or "/")))
        if node.allow_expand:
            icon = self.ICON_NODE_EXPANDED if node.is_expanded else self.ICON_NODE
            return Text.assemble((icon, base_style + TOGGLE), label)
        return Text.assemble((" " * ICON, base_style), label)

    # -- moving around ----------------------------------------------------------

    def select_path(self, path: str) -> None:
        """Put the cursor on cgroup ``path``, its ancestors expanded so that it shows."""
        node = self.nodes.get(path)
        if node is None:
            return
        parent = node.parent
        while parent is not None:
            if not parent.is_expanded:
                parent.expand()
            parent = parent.parent
        _ = self._tree_lines  # the lines again, so the node has one
        self.move_cursor(node)

    def action_expand_or_child(self) -> None:
        node = self.cursor_node
        if node is None or not node.allow_expand:
            return
        if not node.is_expanded:
            node.expand()
        elif node.children:
            self.move_cursor(node.children[0])

    def action_expand_all(self) -> None:
        self.root.expand_all()

    def action_collapse_all(self) -> None:
        """Every cgroup collapsed but the root; the cursor goes to the top-level one it was under."""
        node = self.cursor_node
        while node is not None and node.parent is not None and node.parent is not self.root:
            node = node.parent
        for child in self.root.children:
            child.collapse_all()
        if node is not None:
            _ = self._tree_lines
            self.move_cursor(node)

    # -- the flat view ------------------------------------------------------------

    def flat_view(self) -> Companion | None:
        """The flat view beside this tree (``#flat``), when the screen has one."""
        if not self._flat_looked and self.parent is not None:
            found = self.parent.query_children("#flat")
            self._flat = cast(Companion, found.first()) if found else None
            self._flat_looked = True
        return self._flat

    def action_flat_view(self) -> None:
        flat = self.flat_view()
        if flat is None:
            self.notify("no flat view on this screen", severity="warning")
            return
        node = self.cursor_node
        flat.open(node.data or "/" if node is not None else "/")
