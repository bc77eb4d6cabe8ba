"""report: the study on one page, after every other stage. `reports/index.md` (tables read from
metrics/, each row naming its file and key, a verdict per comparison, the stages' own figures),
`reports/index.html` (the same, self-contained), and `metrics/headline.json`, the dozen numbers
`dvc exp show` sorts a sweep by. Reads and formats only: no statistic is computed here."""

from pathlib import Path

from deltalab import stage
from deltalab.atomic import atomic_file
from deltalab.deltas.claims import CLAIM_BY_KEY
from deltalab.report.study import HEADLINE, INDEX_HTML, INDEX_MD, build, headline, html, markdown


def main(params) -> None:
    page = build(params, Path("."), CLAIM_BY_KEY)
    for path, text in ((INDEX_MD, markdown(page)), (INDEX_HTML, html(page))):
        with atomic_file(path) as tmp:
            tmp.write_text(text, encoding="utf-8")
    numbers = headline(page)
    stage.finish(
        HEADLINE,
        numbers,
        f"{INDEX_MD}: {len(page.lines)} lines, {len(page.figures)} figures; "
        f"{len(numbers)} headline numbers",
    )


if __name__ == "__main__":
    stage.run(main)
