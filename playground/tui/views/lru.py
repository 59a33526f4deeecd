"""The LRU view: one cgroup's reclaimable list from head (scanned next) to tail, each page's
enclave, index, kind and accessed bits, which pages the next reclaim batch takes and what it
does with them; then the cgroup's unreclaimable pages (SECS, VA, guest EPC)."""

from __future__ import annotations

from typing import Any, Protocol

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from wire.messages import LruListing
from wire.protocol import EngineError
from workloads.client import NoEngine

PAGE = 200  # pages per request: a screenful or a few, well under the op's bound
MARKS = {
    "write": Text("EWB: written out", style="bold yellow"),
    "rotate": Text("young: back to the tail", style="green"),
    "drop": Text("enclave going: dropped", style="dim"),
}


class LruSource(Protocol):
    def lru(self, cgroup: str, offset: int = 0, limit: int = 256, unreclaimable_offset: int = 0) -> LruListing: ...


def young_pids(young: int, slots: dict[int, int]) -> str:
    """The pids of the mms in which the page is young (bit n of ``young``: slot n), or ``-``."""
    pids = [str(pid) for slot, pid in sorted(slots.items()) if young >> slot & 1]
    return ",".join(pids) if pids else "-"


def summary(listing: LruListing) -> str:
    batch = listing["batch"]
    shown = f"{listing['offset']}..{listing['offset'] + len(listing['pages']) - 1}" if listing["pages"] else "none"
    return (
        f"[b]{listing['cgroup']}[/b]: {listing['size']} pages on its LRU (showing {shown}), "
        f"{listing['nr_unreclaimable']} unreclaimable.  The next batch isolates the first "
        f"{listing['nr_to_scan']} from the head: writes [b]{batch.get('write', 0)}[/b] (EWB), rotates "
        f"[b]{batch.get('rotate', 0)}[/b] (young: accessed bit cleared, back to the tail).  "
        f"Its walk's cursor (next_cg): {listing['next_cg']}"
    )


class LruScreen(Screen[None]):
    """The selected cgroup's LRU, refreshed every second; PgDn/PgUp page through it."""

    DEFAULT_CSS = """
    LruScreen #lru-summary { height: auto; padding: 0 1; background: $boost; }
    LruScreen #lru-pages { height: 1fr; }
    LruScreen #lru-pinned-title { height: 1; padding: 0 1; background: $boost; }
    LruScreen #lru-pinned { height: 7; }
    """

    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("pagedown", "page(1)", "Next page"),
        Binding("pageup", "page(-1)", "Previous page"),
        Binding("home", "first", "Head", show=False),
    ]
    HELP = """\
## LRU view

The selected cgroup's own reclaimable list, **head first**: reclaim isolates
`SGX_NR_TO_SCAN` (16) pages from the head; a page young in any mm has one accessed bit
cleared and goes back to the tail (*rotate*), an old one is written out by EWB. Faults
and new pages join at the tail. `young in` lists the pids in whose mm the page was
accessed since reclaim last looked (the kernel's per-mm `test_and_clear_young`).
Below: the pages no LRU holds (SECS, VA, a guest's EPC), which only the enclave's end
frees. `PgDn`/`PgUp` page, `Home` back to the head, `Esc` back.
"""

    def __init__(self, source: LruSource, cgroup: str) -> None:
        super().__init__()
        self.source = source
        self.cgroup = cgroup
        self.start = 0
        self.listing: LruListing | None = None
        self.error = ""

    def compose(self) -> ComposeResult:
        yield Static(id="lru-summary")
        yield DataTable(id="lru-pages", cursor_type="row", zebra_stripes=True)
        yield Static(id="lru-pinned-title")
        yield DataTable(id="lru-pinned", cursor_type="row")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#lru-pages", DataTable).add_columns(
            "position", "frame", "enclave", "index", "kind", "young in", "next batch"
        )
        self.query_one("#lru-pinned", DataTable).add_columns("frame", "owner", "index", "kind")
        self.load()
        self.set_interval(1.0, self.load)

    def load(self) -> None:
        try:
            listing = self.source.lru(self.cgroup, self.start, PAGE)
        except EngineError as e:
            self._say(f"{self.cgroup}: {e.message} ({e.code})")
            return
        except NoEngine as e:
            self._say(str(e))
            return
        self.listing = listing
        self.error = ""
        self.query_one("#lru-summary", Static).update(summary(listing))
        self._fill_pages(listing)
        self._fill_pinned(listing)

    def _say(self, error: str) -> None:
        self.error = error
        self.query_one("#lru-summary", Static).update(Text(error, style="bold red"))

    def _fill_pages(self, listing: LruListing) -> None:
        table = self.query_one("#lru-pages", DataTable)
        row = table.cursor_row
        table.clear()
        slots = {eid: {slot: pid for pid, slot in mms} for eid, mms in listing["mms"]}
        for position, (frame, eid, index, kind, young, mark) in enumerate(listing["pages"], listing["offset"]):
            shown: Any = MARKS.get(mark, "")
            table.add_row(position, frame, eid, index, kind, young_pids(young, slots.get(eid, {})), shown)
        if table.row_count:
            table.move_cursor(row=min(row, table.row_count - 1))

    def _fill_pinned(self, listing: LruListing) -> None:
        self.query_one("#lru-pinned-title", Static).update(
            f"unreclaimable: {listing['nr_unreclaimable']} pages (SECS, VA, guest EPC), freed only when "
            "their enclave or guest ends"
        )
        table = self.query_one("#lru-pinned", DataTable)
        table.clear()
        for frame, owner, index, kind in listing["unreclaimable"]:
            table.add_row(frame, owner, "SECS" if index < 0 else index, kind)

    def action_page(self, direction: int) -> None:
        size = self.listing["size"] if self.listing is not None else 0
        self.start = max(0, min(self.start + direction * PAGE, max(0, size - 1)))
        self.load()

    def action_first(self) -> None:
        self.start = 0
        self.load()
