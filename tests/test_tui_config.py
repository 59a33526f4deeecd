"""The TUI's config file (issue 13): $XDG_CONFIG_HOME/epc-playground/config.toml, read at
start; a bad key or value is one notice and its default; the theme picked is saved back."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from engined.runtime import ENDPOINT_ENV
from playground.tui.app import DISCONNECTED, EpcApp
from playground.tui.config import TuiConfig, default_path, load_config, parse_config, save_theme

from .engine_fixture import ROOT, private_env, start_engine
from .test_tui_keys import engine_stopped
from .test_tui_robust import Notes, terminal, until
from .test_tui_shell import BIG, feed_app, started


def test_config_good_values_are_read(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(
        'theme = "nord"\nrefresh_rate = 10\ncolumns = ["pid", "name", "state"]\n'
        f'capacity = "256MiB"\nscreenshot_dir = "{tmp_path}"\n'
    )
    config = load_config(path)
    assert config == TuiConfig(path, "nord", 10.0, ("pid", "name", "state"), 256 << 20, str(tmp_path))
    assert config.notices == ()


def test_config_a_missing_file_is_the_defaults_and_an_unknown_key_or_bad_value_is_one_notice_each(
    tmp_path: Path,
) -> None:
    assert load_config(tmp_path / "none.toml") == TuiConfig(tmp_path / "none.toml")
    config = parse_config({"theme": "nord", "refresh_rate": 50, "colour": "red", "capacity": "lots"})
    assert (config.theme, config.refresh_hz, config.capacity) == ("nord", 4.0, 128 << 20)
    assert len(config.notices) == 3, config.notices
    assert config.notices[0].startswith("refresh_rate ignored: 50 is not a number of refreshes per second from 1 to 20")
    assert config.notices[1].startswith("unknown key 'colour' ignored")
    assert config.notices[2].startswith("capacity ignored: 'lots' is not a size")
    broken = tmp_path / "broken.toml"
    broken.write_text("theme = \n")
    [notice] = load_config(broken).notices
    assert notice.startswith(f"{broken}: not TOML") and "defaults" in notice
    assert parse_config({"screenshot_dir": str(tmp_path / "nowhere")}).screenshot_dir == "."


def test_config_path_follows_xdg_config_home() -> None:
    assert default_path({"XDG_CONFIG_HOME": "/cfg", "HOME": "/h"}) == Path("/cfg/epc-playground/config.toml")
    assert default_path({"HOME": "/h"}) == Path("/h/.config/epc-playground/config.toml")
    assert default_path({"XDG_CONFIG_HOME": "relative", "HOME": "/h"}) == Path("/h/.config/epc-playground/config.toml")


def test_save_theme_replaces_the_theme_line_and_keeps_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "config.toml"
    save_theme(path, "nord")
    assert path.read_text() == 'theme = "nord"\n'
    path.write_text('# mine\nrefresh_rate = 2\ntheme = "nord"\ncolumns = ["pid"]\n')
    save_theme(path, "gruvbox")
    assert path.read_text() == '# mine\nrefresh_rate = 2\ntheme = "gruvbox"\ncolumns = ["pid"]\n'
    assert load_config(path).theme == "gruvbox"


def test_config_takes_effect_refresh_rate_theme_columns_and_bad_ones_are_said_at_start(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('theme = "nord"\nrefresh_rate = 10\ncolumns = ["pid", "name", "state", "colour"]\nsize = 3\n')
    notes = Notes()

    async def scenario() -> tuple[float, str, list[str], str]:
        app = feed_app(config=load_config(path))
        async with app.run_test(size=BIG, message_hook=notes) as pilot:
            await started(pilot)
            await until(pilot, lambda: len(notes) >= 2, "the notices")
            interval = app.refresh_timer._interval
            columns = [str(column.label) for column in app.workload_table.columns.values()]
            theme = app.theme
            app.theme = "gruvbox"  # what the palette's Theme command does
            await until(pilot, lambda: 'theme = "gruvbox"' in path.read_text(), "the theme saved")
            saved = path.read_text()
            await pilot.press("q")
            return interval, theme, columns, saved

    interval, theme, columns, saved = asyncio.run(scenario())
    assert interval == pytest.approx(0.1) and theme == "nord"
    assert [name.split(" ")[0] for name in columns] == ["pid", "name", "state"]  # (pid with its sort arrow)
    assert any("columns: 'colour' ignored" in note for note in notes), notes
    assert any("unknown key 'size' ignored" in note for note in notes), notes
    assert saved.startswith('theme = "gruvbox"\nrefresh_rate = 10\n')


def test_an_unknown_theme_is_said_at_start_and_the_default_kept(tmp_path: Path) -> None:
    notes = Notes()

    async def scenario() -> str:
        app = feed_app(config=parse_config({"theme": "no-such-theme"}, tmp_path / "c.toml"))
        async with app.run_test(size=BIG, message_hook=notes) as pilot:
            await started(pilot)
            await until(pilot, lambda: any("theme ignored" in n for n in notes), "the notice")
            theme = app.theme
            await pilot.press("q")
            return theme

    assert asyncio.run(scenario()) == "textual-dark"
    assert not (tmp_path / "c.toml").exists()  # the default theme is not written back


def test_screenshots_go_to_the_configured_directory(tmp_path: Path) -> None:
    shots = tmp_path / "shots"
    shots.mkdir()
    notes = Notes()

    async def scenario() -> None:
        app = feed_app(config=parse_config({"screenshot_dir": str(shots)}))
        async with app.run_test(size=BIG, message_hook=notes) as pilot:
            await started(pilot)
            app.deliver_screenshot()  # what the palette's Screenshot command calls
            await until(pilot, lambda: list(shots.glob("*.svg")), "the SVG in the configured directory")
            await pilot.press("q")

    asyncio.run(scenario())
    assert any(str(shots) in note for note in notes), notes


def test_tui_config_naming_no_file_is_one_line_and_exit_2(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "playground.cli", "tui", "--config", str(tmp_path / "nope.toml")],
        env=private_env(tmp_path), cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert (
        done.stderr
        == f"epc-playground tui: no config file at {tmp_path / 'nope.toml'} (create it, or leave out --config)\n"
    )


@pytest.mark.slow
def test_the_configs_capacity_is_the_engine_the_tui_starts_and_a_bad_key_is_said_on_screen(tmp_path: Path) -> None:
    path = tmp_path / "tui.toml"
    path.write_text('capacity = "8MiB"\nrefresh_rate = 0\n')
    env = private_env(tmp_path)
    with terminal(["tui", "--config", str(path)], env) as term, engine_stopped(env) as info:
        term.wait_for("EPC 8 MiB")
        term.wait_for("refresh_rate ignored")
        term.type(b"q")
        assert term.process.wait(20) == 0
    assert int(info["capacity"]) == 8 << 20


@pytest.mark.slow
def test_r_starts_an_engine_of_the_configs_capacity(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", private_env(tmp_path)["XDG_RUNTIME_DIR"])
    monkeypatch.delenv(ENDPOINT_ENV, raising=False)
    running = start_engine(tmp_path, "--capacity", "4MiB")

    async def scenario() -> int:
        app = EpcApp(running.endpoint, config=parse_config({"capacity": "12MiB"}))
        async with app.run_test(size=BIG) as pilot:
            await until(pilot, lambda: app.feed is not None and app.feed.connected, "the feed")
            running.process.kill()
            running.process.wait()
            await until(pilot, lambda: app.sub_title == DISCONNECTED, "disconnected")
            await pilot.press("r")
            await until(pilot, lambda: app.feed is not None and app.feed.connected, "the new engine's feed")
            assert app.feed is not None
            await until(pilot, lambda: int(app.feed.snapshot["capacity"]) != 4 << 20, "the new engine's snapshot")
            capacity = int(app.feed.snapshot["capacity"])
            await pilot.press("q")
            return capacity

    assert asyncio.run(scenario()) == 12 << 20
