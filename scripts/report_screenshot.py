#!/usr/bin/env python
"""Open a page of ``beet cnngenre --report`` in headless Chromium with the network cut off, save a
screenshot, and check that the page asked for nothing but itself.

Usage::

    python scripts/report_screenshot.py PAGE.html [--out shot.png] [--width 1400] [--height 3600]
                                        [--album KEY]

Chromium comes from the system's packages (Debian: ``apt-get install chromium``). Every host name
resolves to nothing and Chromium's network log is kept; the script prints the seconds Chromium took
to load, lay out and screenshot the page, and fails (exit 1) when the page requested any URL other
than its own file (``data:``, ``blob:`` and Chromium's internal pages aside). ``--album KEY`` opens the
page with that album highlighted (``PAGE.html#album=KEY``).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "chrome")
LOCAL_SCHEMES = ("file:", "data:", "blob:", "chrome:", "chrome-error:", "about:", "devtools:")
#: Hosts of Chromium's own services (updates, sign-in, network time), which it calls whatever page it shows;
#: they are counted apart from the page's requests.
BROWSER_HOSTS = re.compile(r"^[a-z]+://([a-z0-9-]+\.)*(google\.com|googleapis\.com|gvt1\.com|gstatic\.com)[:/]")


def browser() -> str:
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    sys.exit("no Chromium found: install it from the system's packages (Debian: apt-get install chromium)")


def requested_urls(net_log: Path) -> set:
    """Every URL in Chromium's network log (read as text: a log cut short is not valid JSON)."""
    text = net_log.read_text(errors="replace") if net_log.exists() else ""
    return set(re.findall(r'"url":"([^"]+)"', text))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("page", type=Path)
    parser.add_argument("--out", type=Path, help="screenshot file (default: beside the page, .png)")
    parser.add_argument("--width", type=int, default=1400)
    parser.add_argument("--height", type=int, default=3600)
    parser.add_argument("--album", help="highlight this album (its beets id) on the map")
    parser.add_argument("--timeout", type=float, default=180)
    args = parser.parse_args(argv)
    page = args.page.resolve()
    if not page.is_file():
        sys.exit(f"{page}: no such file")
    out = (args.out or page.with_suffix(".png")).resolve()
    url = page.as_uri() + (f"#album={args.album}" if args.album else "")
    with tempfile.TemporaryDirectory(prefix="cnngenre-shot-") as folder:
        net_log = Path(folder) / "net-log.json"
        command = [browser(), "--headless", "--no-sandbox", "--disable-gpu-sandbox", "--hide-scrollbars",
                   # WebGL in software: headless machines have no GPU, the map is drawn with WebGL.
                   "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
                   "--host-resolver-rules=MAP * ~NOTFOUND", "--no-first-run", "--disable-extensions",
                   "--disable-background-networking", "--disable-component-update", "--disable-sync",
                   "--disable-domain-reliability", "--no-pings", "--disable-features=OptimizationHints,"
                   "OptimizationGuideModelDownloading,NetworkTimeServiceQuerying,MediaRouter",
                   f"--user-data-dir={folder}/profile", f"--log-net-log={net_log}",
                   f"--window-size={args.width},{args.height}", "--virtual-time-budget=20000",
                   f"--screenshot={out}", url]
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout)
        seconds = time.perf_counter() - started
        if done.returncode or not out.exists():
            print(done.stderr[-3000:], file=sys.stderr)
            sys.exit(f"Chromium failed ({done.returncode}) on {url}")
        remote = [u for u in requested_urls(net_log) if not u.lower().startswith(LOCAL_SCHEMES)]
    foreign = sorted(u for u in remote if not BROWSER_HOSTS.match(u.lower()))
    print(f"{out}: {page.stat().st_size / 2**20:.1f} MiB page loaded and shot in {seconds:.1f} s "
          f"(Chromium's start included); Chromium's own service requests (updates, sign-in): "
          f"{len(remote) - len(foreign)}")
    if foreign:
        print("the page requested URLs beyond itself:\n" + "\n".join(foreign))
        return 1
    print("the page requested nothing beyond its own file")
    return 0


if __name__ == "__main__":
    sys.exit(main())
