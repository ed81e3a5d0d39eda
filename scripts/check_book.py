#!/usr/bin/env python
"""Check a built book: every page, image and the PDF exist, no error output, and pages render.

Run after `wspec book` from the repository root:

    .venv/bin/python scripts/check_book.py [--root .] [--no-browser] [--no-pdf] [--warn-on-scroll]

Checks, each failure listed in the report (exit status 1 if any):

* every `_toc.yml` chapter (and every generated model-run page in book/runs/runs.json) has an
  HTML page;
* every <img> a page references exists on disk;
* no code-cell output contains a Python traceback or an ``...Error:`` line;
* no MyST role (``{glue:...}``, ``{doc}``, ...) reached the text unrendered;
* _build/latex/wspec.pdf exists, is a PDF and is not trivially small (glyphs its fonts lack,
  e.g. Korean in a random model's transcript, are reported as a warning);
* every page offers its source (.md or .ipynb) in the download menu, every executed
  notebook page also its executed .ipynb, and the landing page links the PDF; each such link
  resolves to a file in the HTML output;
* each page opened in headless Chromium (the Debian package) finishes loading with every image
  decoded (naturalWidth > 0), every download link opened (a non-empty file read through the
  link) and, on pages with math, MathJax output (``mjx-container``) and no MathJax error;
  no table that scrolls sideways in a 1280 px wide window (``--warn-on-scroll`` reports one
  as a warning instead, an escape hatch for a local look; the Makefile and CI use the default).
  The check script is injected into a temporary copy of the page next to it, so relative
  links resolve exactly as in the real page.
"""

from __future__ import annotations

import argparse
import html.parser
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

MIN_PDF_BYTES = 50_000
BROWSER_TIMEOUT_S = 60
#: Browser window width (CSS px) at which no table may scroll sideways: a common laptop width.
WINDOW_WIDTH = 1280
# A MyST role that reached the page as text: a glue key or reference the build did not resolve.
# A backtick in rendered prose is markup that failed to parse (e.g. a role inside a code span).
RAW_ROLE = re.compile(r"\{(glue(:\w+)?|doc|ref|numref|eq|cite(:\w+)?)\}`|`")
ERROR_LINE = re.compile(r"^\s*(Traceback \(most recent call last\)|\w*(Error|Exception): )", re.M)
# A library warning in a cell output is noise for a reader (and a sign of a deprecated call).
WARNING_TEXT = re.compile(r"\b\w*Warning: ")
PROBE = r"""
<script>
(function () {
  function report(extra) {
    const imgs = Array.from(document.images).map(i => ({src: i.getAttribute("src"),
      ok: i.complete && i.naturalWidth > 0}));
    const scrolling = [];
    document.querySelectorAll("table").forEach(function (t) {
      for (let el = t; el && el !== document.body; el = el.parentElement) {
        const ox = getComputedStyle(el).overflowX;
        if ((ox === "auto" || ox === "scroll") && el.scrollWidth > el.clientWidth + 1) {
          const head = Array.from(t.querySelectorAll("th")).slice(0, 3)
            .map(h => h.textContent.trim()).join(" | ").slice(0, 60);
          scrolling.push({table: head, px: el.scrollWidth - el.clientWidth});
          break;
        }
      }
    });
    const out = Object.assign({imgs: imgs, scrolling: scrolling,
      mjx: document.querySelectorAll("mjx-container").length,
      mjxErrors: document.querySelectorAll("mjx-merror, [data-mjx-error]").length,
      mathSources: document.querySelectorAll(".math").length}, extra);
    const pre = document.createElement("pre");
    pre.id = "wspec-check";
    pre.textContent = JSON.stringify(out);
    document.body.appendChild(pre);
  }
  function open(href) {
    return new Promise(function (resolve) {
      const xhr = new XMLHttpRequest();
      xhr.open("GET", href);
      xhr.responseType = "arraybuffer";
      xhr.onload = () => resolve({href: href, bytes: xhr.response ? xhr.response.byteLength : 0});
      xhr.onerror = () => resolve({href: href, bytes: -1});
      xhr.send();
    });
  }
  window.addEventListener("load", function () {
    const links = Array.from(document.querySelectorAll("a[href]")).map(a => a.getAttribute("href"))
      .filter(h => /(^|\/)_sources\/|\.pdf$/.test(h));
    const mj = window.MathJax && window.MathJax.startup && window.MathJax.startup.promise;
    const math = mj ? mj.then(() => true, e => String(e)) : Promise.resolve(false);
    Promise.all([math, Promise.all(links.map(open))]).then(
      ([m, opened]) => report({mathjax: m, downloads: opened}));
  });
})();
</script>
"""


_CODE_TAGS = ("code", "pre", "script", "style")


class _Page(html.parser.HTMLParser):
    """Images, code-cell output text and prose text (outside code) of one HTML page."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.links: list[str] = []
        self.output_text: list[str] = []
        self.prose_text: list[str] = []
        self._depth = 0  # >0 while inside a cell output
        self._stack: list[bool] = []
        self._code = 0  # >0 inside code, pre, script or style, where role syntax may be shown

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "img" and a.get("src"):
            self.images.append(a["src"] or "")
        if tag == "a" and a.get("href"):
            self.links.append(a["href"] or "")
        if tag in ("br", "img", "meta", "link", "input", "hr"):
            return
        self._code += tag in _CODE_TAGS
        classes = (a.get("class") or "").split()
        is_output = "cell_output" in classes or "output" in classes
        self._stack.append(is_output)
        self._depth += is_output

    def handle_endtag(self, tag: str) -> None:
        if tag in ("br", "img", "meta", "link", "input", "hr") or not self._stack:
            return
        self._code -= tag in _CODE_TAGS
        self._depth -= self._stack.pop()

    def handle_data(self, data: str) -> None:
        if self._depth > 0:
            self.output_text.append(data)
        elif self._code == 0:
            self.prose_text.append(data)


def expected_pages(root: Path) -> list[str]:
    """Docnames the book must contain: _toc.yml files plus the generated model-run pages."""
    sys.path.insert(0, str(root))
    from wspec.book import MANIFEST_NAME, RUNS_DIR, toc_files

    pages = toc_files(root)
    manifest = root / RUNS_DIR / MANIFEST_NAME
    if manifest.is_file():
        for run in json.loads(manifest.read_text())["runs"]:
            pages.append(str(Path(run["page"]).with_suffix("")))
    else:
        pages.append(f"{RUNS_DIR.as_posix()}/{MANIFEST_NAME} (missing: run `wspec book`)")
    return pages


def check_static(html_dir: Path, docnames: list[str]) -> tuple[list[str], list[Path]]:
    """Pages, images and error outputs; returns (problems, pages found)."""
    problems: list[str] = []
    found: list[Path] = []
    for doc in docnames:
        page = html_dir / f"{doc}.html"
        if not page.is_file():
            problems.append(f"{doc}: no HTML page ({page} missing)")
            continue
        found.append(page)
        parser = _Page()
        parser.feed(page.read_text(encoding="utf-8"))
        for src in parser.images:
            if src.startswith(("data:", "http:", "https:")):
                continue
            target = (page.parent / src.split("#")[0].split("?")[0]).resolve()
            if not target.is_file():
                problems.append(f"{doc}: image {src} does not exist")
        output = "".join(parser.output_text)
        hit = ERROR_LINE.search(output) or WARNING_TEXT.search(output)
        if hit:
            problems.append(f"{doc}: a cell output contains {hit.group(0).strip()!r}")
        raw = RAW_ROLE.search("".join(parser.prose_text))
        if raw:
            at = raw.start()
            context = "".join(parser.prose_text)[max(0, at - 40) : at + 40].replace("\n", " ")
            problems.append(f"{doc}: unrendered MyST markup in the text: ...{context}...")
    return problems, found


def check_downloads(
    root: Path, html_dir: Path, pages: list[Path], landing: str, pdf: bool
) -> list[str]:
    """The download menu of every page (its source; the executed .ipynb of a notebook page)
    and the landing page's PDF link: present, and each pointing at a file that exists."""
    problems = []
    executed = root / "_build" / "jupyter_execute"
    for page in pages:
        doc = page.relative_to(html_dir).with_suffix("").as_posix()
        parser = _Page()
        parser.feed(page.read_text(encoding="utf-8"))
        links = [h for h in parser.links if "_sources/" in h or h.endswith(".pdf")]
        for href in links:
            if href.endswith(".pdf") and not pdf:
                continue  # --no-pdf: no PDF was built, so its link cannot resolve
            if not (page.parent / href.split("#")[0]).resolve().is_file():
                problems.append(f"{doc}: download link {href} resolves to no file")
        sources = [Path(h).name for h in links if "_sources/" in h]
        notebook = (executed / doc).with_suffix(".ipynb").is_file() or (root / doc).with_suffix(
            ".ipynb"
        ).is_file()
        wanted = [".md"] * (not (root / doc).with_suffix(".ipynb").is_file())
        wanted += [".ipynb"] * notebook
        for suffix in wanted:
            if f"{Path(doc).name}{suffix}" not in sources:
                problems.append(f"{doc}: the download menu offers no {suffix}")
        if doc == landing and pdf and not any(h.endswith("wspec.pdf") for h in links):
            problems.append(f"{doc}: the landing page does not link the PDF")
    return problems


def check_pdf(root: Path) -> list[str]:
    """PDF present and real; missing glyphs are printed as a warning, not a failure: a
    transcript of an untrained or multilingual model may contain any script, and no font
    set covers them all."""
    pdf = root / "_build" / "latex" / "wspec.pdf"
    if not pdf.is_file():
        return [f"PDF {pdf} missing"]
    problems = []
    data = pdf.read_bytes()
    if not data.startswith(b"%PDF") or len(data) < MIN_PDF_BYTES:
        problems.append(f"PDF {pdf} is not a real PDF or too small ({len(data)} bytes)")
    log = pdf.with_suffix(".log")
    if log.is_file():
        missing = sorted(
            set(
                re.findall(
                    r"Missing character: There is no (.+?) in font",
                    log.read_text(encoding="utf-8", errors="replace"),
                )
            )
        )
        if missing:
            print(f"[check_book] warning: the PDF fonts lack {', '.join(missing[:10])}")
    return problems


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


def render(browser: str, page: Path) -> dict | str:
    """Open a probed copy of `page` in headless Chromium; the probe's JSON or an error text."""
    text = page.read_text(encoding="utf-8")
    probe = page.with_name(f".wspec-check-{os.getpid()}-{page.name}")
    probe.write_text(text.replace("</body>", PROBE + "</body>", 1), encoding="utf-8")
    profile = tempfile.mkdtemp(prefix="wspec-chromium-")
    try:
        done = subprocess.run(
            [
                browser,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--allow-file-access-from-files",
                f"--user-data-dir={profile}",
                "--virtual-time-budget=20000",
                f"--window-size={WINDOW_WIDTH},900",
                "--dump-dom",
                probe.resolve().as_uri(),
            ],
            capture_output=True,
            text=True,
            timeout=BROWSER_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        return f"Chromium did not finish within {BROWSER_TIMEOUT_S} s"
    finally:
        probe.unlink(missing_ok=True)
        shutil.rmtree(profile, ignore_errors=True)
    hit = re.search(r'<pre id="wspec-check"[^>]*>(.*?)</pre>', done.stdout, re.S)
    if not hit:
        return f"page never finished loading (Chromium exit {done.returncode})"
    return json.loads(html.unescape(hit.group(1)))


def check_browser(
    browser: str,
    html_dir: Path,
    pages: list[Path],
    warn_on_scroll: bool = False,
    pdf: bool = True,
) -> list[str]:
    """Render every page; a table that scrolls sideways at WINDOW_WIDTH is a problem (a printed
    warning with `warn_on_scroll`): a reader should not have to scroll to see a column."""
    problems = []
    for page in pages:
        doc = page.relative_to(html_dir).with_suffix("").as_posix()
        result = render(browser, page)
        if isinstance(result, str):
            problems.append(f"{doc}: {result}")
            continue
        broken = [i["src"] for i in result["imgs"] if not i["ok"]]
        if broken:
            problems.append(f"{doc}: images not loaded in the browser: {broken[:5]}")
        if result["mathSources"] and not result["mjx"]:
            problems.append(f"{doc}: math on the page but MathJax rendered none")
        if result["mjxErrors"]:
            problems.append(f"{doc}: {result['mjxErrors']} MathJax errors")
        for t in result["scrolling"]:
            line = f"{doc}: table [{t['table']}] scrolls {t['px']} px sideways at {WINDOW_WIDTH} px"
            if warn_on_scroll:
                print(f"[check_book] warning: {line}")
            else:
                problems.append(line)
        unread = [
            d["href"]
            for d in result["downloads"]
            if d["bytes"] <= 0 and (pdf or not d["href"].endswith(".pdf"))
        ]
        if unread:
            problems.append(f"{doc}: download links the browser could not open: {unread}")
        print(
            f"  rendered {doc}: {len(result['imgs'])} images, {result['mjx']} formulas, "
            f"{len(result['downloads'])} downloads opened",
            flush=True,
        )
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", default=".", help="book root (holds _config.yml)")
    parser.add_argument("--no-browser", action="store_true", help="skip headless Chromium")
    parser.add_argument("--no-pdf", action="store_true", help="skip the PDF check")
    parser.add_argument(
        "--warn-on-scroll",
        action="store_true",
        help=f"only warn (not fail) if a table scrolls sideways at {WINDOW_WIDTH} px",
    )
    args = parser.parse_args(argv)
    root = Path(args.root).resolve()
    html_dir = root / "_build" / "html"
    docnames = expected_pages(root)
    problems, pages = check_static(html_dir, docnames)
    print(f"[check_book] {len(pages)}/{len(docnames)} pages built", flush=True)
    problems += check_downloads(root, html_dir, pages, docnames[0], pdf=not args.no_pdf)
    if not args.no_pdf:
        problems += check_pdf(root)
    if not args.no_browser:
        browser = chromium()
        if browser is None:
            problems.append("no chromium on PATH: apt-get install chromium (or pass --no-browser)")
        else:
            problems += check_browser(
                browser, html_dir, pages, args.warn_on_scroll, pdf=not args.no_pdf
            )
    if problems:
        print(f"[check_book] FAILED, {len(problems)} problem(s):")
        for p in problems:
            print(f"  - {p}")
        return 1
    pdf = "" if args.no_pdf else " and the PDF"
    print(f"[check_book] OK: every page, image, download{pdf} are there; pages render with math")
    return 0


if __name__ == "__main__":
    sys.exit(main())
