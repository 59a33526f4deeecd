"""The event log's lines: each wrapped to the width in its columns (stamp, kind, text), never cut,
with a cursor, and under an open pressure line its reclaim trace (no feed, no engine here)."""

from __future__ import annotations

from bisect import bisect_right
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from rich.cells import cell_len
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual import events
from textual.binding import Binding, BindingType
from textual.geometry import Region, Size
from textual.scroll_view import ScrollView
from textual.strip import Strip

from playground.tui.describe import KIND_WIDTH, STAMP_WIDTH, Known, stamp
from playground.tui.describe import _reclaim as reclaim_text

LOG_LINES = 1000
TRACE_KEPT = 32  # reclaim batches kept under one pressure line; the others are counted
INDENT = STAMP_WIDTH + 1 + KIND_WIDTH + 1  # where a line's text starts
NARROW = 30  # under this many columns left for the text, a wrapped line goes on under the kind instead


@dataclass(slots=True)
class Trace:
    """The reclaim batches of one pressure line: the first TRACE_KEPT, and the sums of all."""

    batches: list[dict[str, Any]] = field(default_factory=list)
    count: int = 0
    scanned: int = 0
    rotated: int = 0
    written: int = 0
    since_ns: int | None = None  # recording started within the line's second, at this time

    def add(self, batch: dict[str, Any]) -> None:
        self.count += 1
        self.scanned += int(batch.get("scanned", 0))
        self.rotated += int(batch.get("rotated", 0))
        self.written += int(batch.get("written", 0))
        if len(self.batches) < TRACE_KEPT:
            self.batches.append(batch)


@dataclass(slots=True, eq=False)
class Entry:
    """One line of the log: an engine event, a line a workload logged, or a scenario's KTAP line."""

    t_ns: int | None
    kind: str
    text: str
    failure: bool = False
    event: dict[str, Any] | None = None  # the engine's event (None: a log or KTAP line)
    second: int | None = None  # a pressure line: the second of the engine's clock it sums
    trace: Trace | None = None  # a pressure line: its reclaim batches, when they were received
    expanded: bool = False
    last_tick_ns: int = -1  # a pressure line: the newest stats message it sums
    gone: bool = False  # pruned from the log
    searchable: str = ""  # kind and text, lower case: what the filter matches
    height: int = 0  # rows at ``width`` (0: not measured)
    width: int = 0
    strips: list[Strip] | None = None  # rendered at ``width``
    main_rows: int = 1  # the rows of the line itself (the rest: its trace)

    def line(self) -> str:
        """The line as text: stamp, kind, text."""
        return f"{stamp(self.t_ns)} {self.kind:<{KIND_WIDTH}} {self.text}"

    def changed(self) -> None:
        self.searchable = f"{self.kind} {self.text}".lower()
        self.height = 0
        self.strips = None


def matcher(pattern: str) -> Callable[[Entry], bool]:
    """Case-insensitive containment; ``a,b`` matches lines containing either; empty matches all."""
    terms = [term.strip().lower() for term in pattern.split(",") if term.strip()]
    if not terms:
        return lambda entry: True
    return lambda entry: any(term in entry.searchable for term in terms)


class LogLines(ScrollView, can_focus=True):
    """The lines, wrapped to the width (never cut), with a cursor; follows the newest line until moved."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up", "cursor(-1)", "Up", show=False),
        Binding("down", "cursor(1)", "Down", show=False),
        Binding("pageup", "page(-1)", "Page up", show=False),
        Binding("pagedown", "page(1)", "Page down", show=False),
        Binding("home", "home", "First", show=False),
        Binding("end", "end", "Follow", show=False),
    ]  # the panel's own keys (enter, n, N, esc) are EventLog's, for the help to find them
    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "log--cursor",
        "log--stamp",
        "log--failure",
        "log--pressure",
        "log--aside",
        "log--trace",
        "log--match",
    }
    DEFAULT_CSS = """
    LogLines {
        height: 1fr;
        overflow-x: hidden;
        overflow-y: auto;
        scrollbar-size-vertical: 1;
        & > .log--cursor { background: $block-cursor-blurred-background; }
        &:focus > .log--cursor { background: $block-cursor-background; color: $block-cursor-foreground; }
        & > .log--stamp { color: $text-muted; }
        & > .log--failure { color: $text-error; text-style: bold; }
        & > .log--pressure { color: $text-warning; }
        & > .log--aside { color: $text-secondary; }
        & > .log--trace { color: $text-muted; }
        & > .log--match { text-style: underline; }
    }
    """

    def __init__(self, moved: Callable[[], None], toggle: Callable[[Entry], None]) -> None:
        super().__init__(id="event-lines")
        self.moved = moved  # told when the cursor's line (or what it says) changes
        self.toggle = toggle  # opens or closes a line's trace
        self.entries: deque[Entry] = deque()
        self.shown: list[Entry] = []
        self.pattern = ""  # the filter: only matching lines are shown
        self.search = ""  # what n/N look for: the last filter, kept after it is cleared
        self.cursor = -1  # index in shown
        self.follow = True  # the cursor stays on the newest line
        self._tops: list[int] = []  # the first row of each shown entry
        self._laid_out = False
        self._end_y = 0  # where following last scrolled to: a view above it was scrolled up by hand

    # -- content ----------------------------------------------------------------

    def append(self, entries: list[Entry]) -> None:
        """New lines at the end (the oldest beyond LOG_LINES go), and what changed drawn again."""
        if entries:
            for entry in entries[:-LOG_LINES]:
                entry.gone = True
            entries = entries[-LOG_LINES:]
            for entry in entries:
                entry.changed()
            dropped = 0
            for _ in range(max(len(self.entries) + len(entries) - LOG_LINES, 0)):
                old = self.entries.popleft()
                old.gone = True
                if dropped < len(self.shown) and self.shown[dropped] is old:
                    dropped += 1
            del self.shown[:dropped]
            self.entries.extend(entries)
            match = matcher(self.pattern)
            self.shown.extend(entry for entry in entries if match(entry))
            if self.follow:
                self.cursor = len(self.shown) - 1
            else:
                self.cursor = max(self.cursor - dropped, 0 if self.shown else -1)
            self._laid_out = False
        self.commit()

    def redraw(self, entry: Entry) -> None:
        """An entry's text or trace changed: drawn again at the next commit()."""
        entry.changed()
        if not entry.gone:
            self._laid_out = False

    def commit(self) -> None:
        """Lay out and draw what changed since the last time.  A view scrolled away from the end
        (the mouse wheel, the scrollbar) stops following; one not following stays where it is."""
        if not self._laid_out:
            # scrolled up since we went to the end (a view that grew was only moved up to its new end)
            if self.follow and self.scroll_offset.y < self._end_y and not self.is_vertical_scroll_end:
                self.follow = False
            self._relayout(scroll=self.follow)

    def set_filter(self, pattern: str) -> None:
        """Show only the lines matching ``pattern`` (all for an empty one), these and those to come;
        the cursor stays on its line when that still shows, else on the nearest one before it."""
        selected = self.selected()
        self.pattern = pattern
        if pattern.strip() and pattern != self.search:
            self.search = pattern
            for entry in self.entries:  # drawn again with the new matches underlined
                entry.strips = None
        match = matcher(pattern)
        self.shown = [entry for entry in self.entries if match(entry)]
        if self.follow or selected is None:
            self.cursor = len(self.shown) - 1
        else:
            self.cursor = self._index_at_or_before(selected)
        self._relayout()

    def _index_at_or_before(self, entry: Entry) -> int:
        """The index in shown of ``entry``, or of the last shown one before it (the first shown when none is)."""
        order = {id(e): i for i, e in enumerate(self.entries)}
        position = order.get(id(entry), len(self.entries))
        best = 0 if self.shown else -1
        for i, candidate in enumerate(self.shown):
            if order[id(candidate)] <= position:
                best = i
            else:
                break
        return best

    def selected(self) -> Entry | None:
        return self.shown[self.cursor] if 0 <= self.cursor < len(self.shown) else None

    # -- layout and drawing -----------------------------------------------------

    @property
    def _width(self) -> int:
        return max(self.scrollable_content_region.width, 1)

    def _relayout(self, scroll: bool = True) -> None:
        """Lay out again; with ``scroll``, show the newest line when following, else the cursor's."""
        self._laid_out = False
        self._layout()
        self.refresh()
        if scroll and self.follow:
            self.scroll_end(animate=False, immediate=True, x_axis=False)
            self._end_y = self.scroll_offset.y
        elif scroll:
            self._show_cursor()
        self.moved()

    def _layout(self) -> None:
        if self._laid_out:
            return
        width = self._width
        tops, row = [], 0
        for entry in self.shown:
            tops.append(row)
            row += self._height(entry, width)
        self._tops = tops
        self.virtual_size = Size(width, row)
        self._laid_out = True

    def _height(self, entry: Entry, width: int) -> int:
        if entry.width != width or not entry.height:
            entry.width, entry.strips = width, None
            text = entry.text
            if not entry.expanded and INDENT + 2 + (len(text) if text.isascii() else cell_len(text)) <= width:
                entry.height = 1  # fits (a marker too): no need to wrap it to know
            else:
                entry.height = len(self._strips(entry, width))
        return entry.height

    def on_resize(self, event: events.Resize) -> None:
        self._relayout()

    def _strips(self, entry: Entry, width: int) -> list[Strip]:
        if entry.strips is not None and entry.width == width:
            return entry.strips
        style = self.rich_style
        stamp_style = self.get_component_rich_style("log--stamp", partial=False)
        if entry.failure:
            text_style = self.get_component_rich_style("log--failure", partial=False)
            kind_style = text_style
        elif entry.kind == "pressure":
            text_style, kind_style = Style(), self.get_component_rich_style("log--pressure", partial=False)
        elif entry.event is None:
            text_style = kind_style = self.get_component_rich_style("log--aside", partial=False)
        else:
            text_style, kind_style = Style(), Style(bold=True)
        marker = ""
        if entry.kind == "pressure" and (entry.trace is not None or entry.expanded):
            marker = "▾ " if entry.expanded else "▸ "
        strips = self._wrap(entry.t_ns, entry.kind, marker + entry.text, width, stamp_style, kind_style, text_style)
        entry.main_rows = len(strips)
        if entry.expanded:
            trace_style = self.get_component_rich_style("log--trace", partial=False)
            for t_ns, kind, text in trace_rows(entry):
                strips += self._wrap(t_ns, kind, text, width, trace_style, trace_style, trace_style)
        entry.strips = [strip.apply_style(style).extend_cell_length(width, style) for strip in strips]
        entry.width, entry.height = width, len(strips)
        return entry.strips

    def _wrap(
        self, t_ns: int | None, kind: str, text: str, width: int, stamp_style: Style, kind_style: Style, style: Style
    ) -> list[Strip]:
        """``stamp kind text``, the text wrapped in its column (under the kind when the column is narrow)."""
        console = self.app.console
        indent = INDENT if width - INDENT >= NARROW else STAMP_WIDTH + 1
        body = Text(text, style=style)
        if self.search:
            terms = [t.strip() for t in self.search.split(",") if t.strip()]
            body.highlight_words(terms, self.get_component_rich_style("log--match", partial=True), case_sensitive=False)
        head = Text.assemble((stamp(t_ns), stamp_style), " ", (f"{kind:<{KIND_WIDTH}}", kind_style), " ")
        if indent != INDENT:  # narrow: the text goes on from the kind's column
            body = Text.assemble((f"{kind:<{KIND_WIDTH}}", kind_style), " ", body)
            head = Text.assemble((stamp(t_ns), stamp_style), " ")
        lines = body.wrap(console, max(width - indent, 1)) if body.cell_len > width - indent else [body]
        strips = []
        for i, line in enumerate(lines):
            row = Text.assemble(head if i == 0 else " " * indent, line)
            row.truncate(width)
            strips.append(Strip(row.render(console), row.cell_len))
        return strips

    def render_line(self, y: int) -> Strip:
        self._layout()
        width = self._width
        row = self.scroll_offset.y + y
        if not self._tops or row >= self.virtual_size.height:
            return Strip.blank(width, self.rich_style)
        index = bisect_right(self._tops, row) - 1
        entry = self.shown[index]
        strips = self._strips(entry, width)
        sub = row - self._tops[index]
        strip = strips[sub] if sub < len(strips) else Strip.blank(width, self.rich_style)
        if index == self.cursor and sub < entry.main_rows and (self.has_focus or not self.follow):
            cursor = self.get_component_rich_style("log--cursor")
            strip = Strip(Segment.apply_style(strip, post_style=cursor), strip.cell_length)
        return strip.crop_extend(0, width, self.rich_style)

    def notify_style_update(self) -> None:
        super().notify_style_update()
        for entry in self.entries:
            entry.strips = None

    # -- the cursor -------------------------------------------------------------

    def _show_cursor(self, whole: bool = False) -> None:
        """Scroll the cursor's line into view (``whole``: its trace too, as much as fits under it)."""
        if 0 <= self.cursor < len(self._tops):
            entry = self.shown[self.cursor]
            rows = self._height(entry, self._width) if whole else entry.main_rows
            rows = min(max(rows, 1), max(self.scrollable_content_region.height, 1))
            region = Region(0, self._tops[self.cursor], self._width, rows)
            self.scroll_to_region(region, animate=False, force=True, immediate=True, x_axis=False)

    def reveal(self) -> None:
        """Stop following and show the cursor's line with its trace (just opened)."""
        self.follow = False
        self._layout()
        self._show_cursor(whole=True)
        self.refresh()
        self.moved()

    def move_to(self, index: int, follow: bool = False) -> None:
        if not self.shown:
            return
        self.cursor = min(max(index, 0), len(self.shown) - 1)
        self.follow = follow
        self._layout()
        self.refresh()
        if follow:
            self.scroll_end(animate=False, immediate=True, x_axis=False)
            self._end_y = self.scroll_offset.y
        else:
            self._show_cursor()
        self.moved()

    def action_cursor(self, step: int) -> None:
        if self.shown:
            self.move_to(self.cursor + step)

    def action_page(self, direction: int) -> None:
        if not self.shown:
            return
        self._layout()
        target = self._tops[max(self.cursor, 0)] + direction * max(self.scrollable_content_region.height - 1, 1)
        self.move_to(bisect_right(self._tops, max(target, 0)) - 1)

    def action_home(self) -> None:
        self.move_to(0)

    def action_end(self) -> None:
        self.follow = True
        self.move_to(len(self.shown) - 1, follow=True)

    def action_clear_filter(self) -> None:
        """Show every line again; n and N still find the filter's matches."""
        if self.pattern:
            self.set_filter("")

    def action_toggle_trace(self) -> None:
        entry = self.selected()
        if entry is None:
            return
        if entry.kind != "pressure":
            self.notify("enter opens the reclaim trace of a pressure line; this is a " + entry.kind, severity="warning")
            return
        self.toggle(entry)

    def action_next_match(self, direction: int) -> None:
        """The next (1) or previous (-1) line matching the last filter, in the whole log: clears a
        filter in place first, so the match is seen among its neighbours (less's n and N)."""
        if not self.search.strip():
            self.notify("nothing to look for: / filters the log, then n and N find its lines", severity="warning")
            return
        selected = self.selected()
        if self.pattern:
            self.set_filter("")
        match = matcher(self.search)
        start = self.shown.index(selected) if selected in self.shown else len(self.shown) - 1
        count = len(self.shown)
        for step in range(1, count + 1):
            index = (start + direction * step) % count
            if match(self.shown[index]):
                self.move_to(index)
                return
        self.notify(f"no line matches {self.search!r}", severity="warning")

    def on_click(self, event: events.Click) -> None:
        offset = event.get_content_offset(self)
        if offset is None or not self._tops:
            return
        row = self.scroll_offset.y + offset.y
        if row < self.virtual_size.height:
            self.move_to(bisect_right(self._tops, row) - 1)

    def on_focus(self) -> None:
        self.refresh()
        self.call_after_refresh(self.moved)  # has_focus is not yet set here

    def on_blur(self) -> None:
        self.refresh()
        self.call_after_refresh(self.moved)


def trace_rows(entry: Entry) -> list[tuple[int | None, str, str]]:
    """The rows under an open pressure line: its reclaim batches, or why there are none."""
    trace = entry.trace
    if trace is None:
        return [
            (
                None,
                "  └",
                "no trace of this second: the TUI receives reclaim batches only while a trace is open;"
                " the cgroup's next line opens with its batches, and later ones have theirs (▸)",
            )
        ]
    rows: list[tuple[int | None, str, str]] = []
    if trace.since_ns is not None:
        rows.append((None, "  ├", f"recorded from {stamp(trace.since_ns).strip('[] ')} s on"))
    for batch in trace.batches:
        rows.append((batch.get("t_ns"), "  ├ reclaim", reclaim_text(batch, Known())))
    more = trace.count - len(trace.batches)
    if more:
        rows.append(
            (
                None,
                "  ├ …",
                f"{more} more batches: scanned {trace.scanned}, rotated {trace.rotated},"
                f" written {trace.written} in all {trace.count}",
            )
        )
    if not trace.count:
        rows.append((None, "  ├", "no reclaim batch on this cgroup's LRU yet"))
    last_t, last_kind, last_text = rows[-1]
    rows[-1] = (last_t, last_kind.replace("├", "└", 1), last_text)
    return rows
