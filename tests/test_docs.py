"""The documentation holds together: the README stays a front door of at most 250 lines, every file in docs/ is
linked from it, and every relative link in the README, docs/ and the other READMEs reaches a file that exists and,
with a `#anchor`, a heading of that file (by GitHub's slug rules)."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
README_MAX_LINES = 250

FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
HTML_ANCHOR = re.compile(r"<a\s+(?:id|name)=\"([^\"]+)\"")
CODE_SPAN = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^()\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:|^//")
CODE_LINE = re.compile(r"^L\d+(-L\d+)?$")


def documents() -> list[Path]:
    """The Markdown files whose links are checked."""
    found = [README, *sorted((ROOT / "docs").glob("*.md")), ROOT / "operator" / "README.md"]
    chart = ROOT / "charts" / "claude-code-proxy" / "README.md"
    return [*found, chart] if chart.is_file() else found


def prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks (a `# comment` in a shell block is no heading, a `[x](y)` there no link)."""
    lines, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(line)
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its text lowercased, punctuation other than '-' and '_' dropped, spaces to '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading counts by its text
    text = re.sub(r"<[^>]+>", "", text).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every anchor a Markdown file offers: its headings' slugs (a repeated one gets -1, -2, …) and HTML anchors."""
    found: set[str] = set()
    seen: dict[str, int] = {}
    for line in prose_lines(path.read_text()):
        found.update(HTML_ANCHOR.findall(line))
        heading = HEADING.match(line)
        if not heading:
            continue
        base = slug(heading.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(path: Path) -> list[str]:
    """The link targets in a Markdown file's prose (code spans and code blocks left out)."""
    return [target for line in prose_lines(path.read_text()) for target in LINK.findall(CODE_SPAN.sub("", line))]


def broken_links(path: Path, root: Path = ROOT) -> list[str]:
    """Each relative link of `path` that reaches no file inside `root`, or no heading there, as 'file: target (why)'."""
    problems = []
    for target in links(path):
        if SCHEME.match(target):
            continue  # a web address or mailto: not checked here
        where, _, anchor = target.partition("#")
        resolved = (path.parent / unquote(where)).resolve() if where else path.resolve()
        name = f"{path.relative_to(root)}: {target}"
        if not resolved.is_relative_to(root.resolve()):
            problems.append(f"{name} (outside the repository)")
        elif not resolved.exists():
            problems.append(f"{name} (no such file)")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            problems.append(f"{name} (no heading with that anchor)")
        elif anchor and resolved.suffix != ".md" and not CODE_LINE.match(anchor):
            problems.append(f"{name} (an anchor into a file that is not Markdown)")
    return problems


def test_the_readme_is_at_most_250_lines() -> None:
    lines = len(README.read_text().splitlines())
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move reference material into docs/"


def test_every_relative_link_and_anchor_in_the_docs_resolves() -> None:
    checked = documents()
    assert README in checked and len(checked) >= 4
    assert sum(len(links(path)) for path in checked) >= 20  # the pattern still finds links
    problems = [problem for path in checked for problem in broken_links(path)]
    assert problems == [], "\n".join(problems)


def test_every_file_in_docs_is_linked_from_the_readme() -> None:
    linked = {(README.parent / target.partition("#")[0]).resolve() for target in links(README)}
    unlinked = [path.name for path in sorted((ROOT / "docs").glob("*.md")) if path.resolve() not in linked]
    assert unlinked == []


def test_slugs_follow_githubs_rules() -> None:
    assert slug("Authentication towards Anthropic") == "authentication-towards-anthropic"
    assert slug("Anthropic's API, with the proxy's login") == "anthropics-api-with-the-proxys-login"
    assert slug("`claude-proxy refresh`") == "claude-proxy-refresh"
    assert slug("Streaming (`stream: true`)") == "streaming-stream-true"
    assert slug("The [Responses](responses.md) API") == "the-responses-api"
    assert slug("snake_case and — dashes") == "snake_case-and--dashes"


def test_a_missing_file_or_heading_is_reported(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "target.md").write_text("# Target\n\n## Token refresh\n\n## Token refresh\n")
    page = tmp_path / "page.md"
    page.write_text(
        "# Page\n\n"
        "[ok](docs/target.md) [ok](docs/target.md#token-refresh) [ok](docs/target.md#token-refresh-1)\n"
        "[ok](#page) [web](https://example.com/missing.md#nowhere) `[code](missing.md)`\n"
        "[gone](docs/missing.md) [no heading](docs/target.md#token-renewal) [here](#nowhere)\n"
        "[away](../../outside.md)\n\n"
        "```bash\n# [in a block](missing.md)\n```\n"
    )
    assert broken_links(page, root=tmp_path) == [
        "page.md: docs/missing.md (no such file)",
        "page.md: docs/target.md#token-renewal (no heading with that anchor)",
        "page.md: #nowhere (no heading with that anchor)",
        "page.md: ../../outside.md (outside the repository)",
    ]
