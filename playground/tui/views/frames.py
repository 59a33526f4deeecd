"""The EPC frame map: every frame of the EPC as a cell, coloured by the cgroup it is charged to
or by what it holds; free frames dark.  On a large EPC a cell stands for a group of frames
(the engine sums them up: the ``frames`` op), so the whole EPC fits the screen."""

from __future__ import annotations

import math
from typing import Protocol

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import Footer, Static

from common.limits import PAGE_SIZE
from common.units import format_size
from wire.messages import FrameCells
from wire.protocol import EngineError
from workloads.client import NoEngine

MAX_CELLS = 65536  # the op's bound
FREE = ("·", "grey23")
# Distinct colours for cgroups, in turn; a glyph too, so the map reads without colour.
PALETTE = (
    "green", "cyan", "magenta", "yellow", "blue", "red", "bright_green", "bright_cyan",
    "bright_magenta", "bright_yellow", "bright_blue", "bright_red", "spring_green3", "orange3", "purple", "turquoise2",
)  # fmt: skip
GLYPHS = "█▓▒░"
KIND_STYLE = {  # by PageKind name
    "SECS": ("S", "bold magenta"),
    "REG": ("█", "green"),
    "TCS": ("T", "cyan"),
    "TRIM": ("t", "yellow"),
    "VA": ("V", "bold blue"),
    "VEPC": ("G", "red"),
}


class FrameSource(Protocol):
    def frames(self, count: int, first: int = 0, group: int = 1) -> FrameCells: ...


def grouping(capacity_frames: int, cells: int) -> int:
    """Frames per cell so that the whole EPC fits in ``cells`` cells (at least 1)."""
    return max(1, math.ceil(capacity_frames / max(1, min(cells, MAX_CELLS))))


def cgroup_style(index: int) -> tuple[str, str]:
    """The glyph and colour of the ``index``-th cgroup of a map: colours first, then glyphs."""
    return GLYPHS[index // len(PALETTE) % len(GLYPHS)], PALETTE[index % len(PALETTE)]


def draw(cells: FrameCells, width: int, by_kind: bool) -> Text:
    """The cells, ``width`` to a line."""
    text = Text()
    kinds = cells["kinds"]
    for i, (owner, kind) in enumerate(zip(cells["owner"], cells["kind"], strict=True)):
        if i and i % width == 0:
            text.append("\n")
        if owner < 0:
            glyph, style = FREE
        elif by_kind:
            glyph, style = KIND_STYLE.get(kinds[kind], ("?", "white"))
        else:
            glyph, style = cgroup_style(owner)
        text.append(glyph, style=style)
    return text


def legend(cells: FrameCells, by_kind: bool) -> Text:
    """What each glyph and colour means, with the cells of each."""
    text = Text()
    if by_kind:
        counts: dict[str, int] = {}
        for owner, kind in zip(cells["owner"], cells["kind"], strict=True):
            if owner >= 0:
                counts[cells["kinds"][kind]] = counts.get(cells["kinds"][kind], 0) + 1
        for name, (glyph, style) in KIND_STYLE.items():
            text.append(f" {glyph} ", style=style).append(f"{name} {counts.get(name, 0)}  ")
    else:
        owned: dict[int, int] = {}
        for owner in cells["owner"]:
            if owner >= 0:
                owned[owner] = owned.get(owner, 0) + 1
        for index, path in enumerate(cells["cgroups"]):
            glyph, style = cgroup_style(index)
            dying = " (removed, still charged)" if index in cells["dying"] else ""
            text.append(f" {glyph} ", style=style).append(f"{path}{dying} {owned.get(index, 0)}  ")
    text.append(f" {FREE[0]} ", style=FREE[1]).append("all free")
    return text


class FrameMap(Widget):
    """The map itself: one character per cell, as many cells as the widget has room for."""

    DEFAULT_CSS = "FrameMap { height: 1fr; }"

    def __init__(self) -> None:
        super().__init__(id="frame-map")
        self.cells: FrameCells | None = None
        self.by_kind = False

    def render(self) -> Text:
        if self.cells is None:
            return Text("asking the engine for its frames ...")
        return draw(self.cells, max(1, self.size.width), self.by_kind)


class FrameMapScreen(Screen[None]):
    """The whole EPC on one screen, refreshed every second; ``k`` colours by kind instead of cgroup."""

    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("k", "by_kind", "By kind / by cgroup"),
    ]
    DEFAULT_CSS = """
    FrameMapScreen #frame-title { height: auto; padding: 0 1; background: $boost; }
    FrameMapScreen #frame-legend { height: auto; padding: 0 1; background: $boost; }
    """
    HELP = """\
## EPC frame map

Every frame of the EPC, in frame order, one character a cell. By cgroup (default): the
colour (and glyph) of the cgroup most of the cell's frames are charged to. By kind (`k`):
`█` REG (enclave pages), `T` TCS, `S` SECS, `V` VA (version arrays, holding evicted pages'
versions), `t` trimmed, `G` guest (vEPC) pages. `·` all free. On a large EPC one cell stands
for a group of frames (the title says how many): the cell shows what most of its frames hold.
`Esc` back.
"""

    def __init__(self, source: FrameSource, capacity_bytes: int) -> None:
        super().__init__()
        self.source = source
        self.capacity_frames = capacity_bytes // PAGE_SIZE
        self.error = ""

    def compose(self) -> ComposeResult:
        yield Static(id="frame-title")
        yield FrameMap()
        yield Static(id="frame-legend")
        yield Footer()

    def on_mount(self) -> None:
        self.call_after_refresh(self.load)
        self.set_interval(1.0, self.load)

    def load(self) -> None:
        frame_map = self.query_one(FrameMap)
        width, height = frame_map.size.width, frame_map.size.height
        if width <= 0 or height <= 0:
            return
        group = grouping(self.capacity_frames, width * height)
        try:
            cells = self.source.frames(math.ceil(self.capacity_frames / group), 0, group)
        except (EngineError, NoEngine) as e:
            self.error = str(e)
            self.query_one("#frame-title", Static).update(Text(self.error, style="bold red"))
            return
        self.error = ""
        free = sum(cells["free"])
        self.query_one("#frame-title", Static).update(
            f"[b]EPC frame map[/b]: {self.capacity_frames} frames ({format_size(self.capacity_frames * PAGE_SIZE)}), "
            f"{group} frame{'s' if group > 1 else ''} a cell, {free} free; "
            f"coloured by {'kind' if frame_map.by_kind else 'cgroup'} (k switches)"
        )
        frame_map.cells = cells
        frame_map.refresh()
        self.query_one("#frame-legend", Static).update(legend(cells, frame_map.by_kind))

    def action_by_kind(self) -> None:
        frame_map = self.query_one(FrameMap)
        frame_map.by_kind = not frame_map.by_kind
        self.load()

    def on_resize(self) -> None:
        self.call_after_refresh(self.load)
