"""Sensors parsed from /proc files (a fixed fake /proc, then the real one)."""

from __future__ import annotations

from pathlib import Path

from launchplan.agent import sensors

STAT = "cpu  100 0 50 800 50 0 0 0 10 0\ncpu0 100 0 50 800 50 0 0 0 10 0\n"
STAT2 = "cpu  160 0 70 900 70 0 0 0 10 0\n"
MEMINFO = "MemTotal:       1000 kB\nMemFree:         100 kB\nMemAvailable:    250 kB\n"
NETDEV = (
    "Inter-|   Receive                            |  Transmit\n"
    " face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets\n"
    "    lo: 999 1 0 0 0 0 0 0 999 1 0 0 0 0 0 0\n"
    "  eth0: 1000 10 0 0 0 0 0 0 2000 20 0 0 0 0 0 0\n"
    "  eth1: 5 1 0 0 0 0 0 0 7 1 0 0 0 0 0 0\n"
)


def _fake_proc(root: Path, stat: str = STAT) -> str:
    (root / "net").mkdir(parents=True, exist_ok=True)
    (root / "stat").write_text(stat)
    (root / "meminfo").write_text(MEMINFO)
    (root / "net" / "dev").write_text(NETDEV)
    (root / "loadavg").write_text("0.50 0.25 0.10 1/100 4242\n")
    return str(root)


def test_parsers_on_fake_proc(tmp_path: Path) -> None:
    proc = _fake_proc(tmp_path)
    before = sensors.cpu_sample(proc)
    assert (before.busy, before.total) == (150, 1000)
    (tmp_path / "stat").write_text(STAT2)
    after = sensors.cpu_sample(proc)
    # busy +80 of total +200 (iowait counts as idle)
    assert sensors.cpu_percent(before, after) == 40.0
    assert sensors.cpu_percent(after, after) == 0.0
    assert sensors.memory(proc) == {
        "total_bytes": 1024000, "available_bytes": 256000, "used_percent": 75.0,
    }
    assert sensors.network(proc) == {"rx_bytes": 1005, "tx_bytes": 2007,
                                     "interfaces": ["eth0", "eth1"]}
    assert sensors.loadavg(proc) == [0.5, 0.25, 0.1]


def test_reader_uses_an_old_enough_sample(tmp_path: Path) -> None:
    proc = _fake_proc(tmp_path)
    reader = sensors.SensorReader(proc)
    reader.sample()
    doc = reader.read()  # the stored sample is too recent: it waits and samples twice
    assert doc["cpu"]["interval"] >= sensors.MIN_CPU_INTERVAL
    assert doc["memory"]["used_percent"] == 75.0


def test_real_proc_is_sane() -> None:
    doc = sensors.SensorReader().read()
    assert 0.0 <= doc["cpu"]["percent"] <= 100.0
    assert doc["cpu"]["count"] >= 1
    mem = doc["memory"]
    assert 0 < mem["available_bytes"] <= mem["total_bytes"]
    assert 0.0 <= mem["used_percent"] <= 100.0
    assert doc["network"]["rx_bytes"] >= 0 and doc["network"]["tx_bytes"] >= 0
    assert "lo" not in doc["network"]["interfaces"]
    assert len(doc["load"]) == 3 and all(v >= 0 for v in doc["load"])
