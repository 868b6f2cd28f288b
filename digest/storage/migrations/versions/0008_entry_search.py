"""entry_search: the search index over entries' titles and summaries (issue 15)

SQLite: an FTS5 table (rowid = entries.id, unicode61 tokenizer; Chinese is indexed a character
a word, see digest/search.py). PostgreSQL: a tsvector per entry with a GIN index. Entries
stored before this revision are indexed here, in batches.

Revision ID: 0008
Revises: 0007
"""

import re

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_CJK_CHAR = re.compile("([\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff])")


def _index_text(text: str) -> str:  # a frozen copy of digest.model.search.index_text
    return _CJK_CHAR.sub(r" \1 ", text)


def upgrade() -> None:
    conn = op.get_bind()
    if conn.dialect.name == "sqlite":
        op.execute(
            "CREATE VIRTUAL TABLE entry_search USING fts5("
            "title, summary, tokenize = 'unicode61 remove_diacritics 2')"
        )
        insert = "INSERT INTO entry_search (rowid, title, summary) VALUES (:id, :t, :s)"
    else:
        op.execute(
            "CREATE TABLE entry_search (entry_id INTEGER NOT NULL PRIMARY KEY"
            " REFERENCES entries (id) ON DELETE CASCADE, document TSVECTOR NOT NULL)"
        )
        op.execute("CREATE INDEX ix_entry_search_document ON entry_search USING gin (document)")
        insert = (
            "INSERT INTO entry_search (entry_id, document) VALUES (:id,"
            " setweight(to_tsvector('simple', :t), 'A') || setweight(to_tsvector('simple', :s), 'B'))"
        )
    last = 0
    while True:
        rows = conn.execute(
            sa.text("SELECT id, title, summary_text FROM entries WHERE id > :last ORDER BY id LIMIT 2000"),
            {"last": last},
        ).all()
        if not rows:
            break
        conn.execute(
            sa.text(insert), [{"id": i, "t": _index_text(t), "s": _index_text(s)} for i, t, s in rows]
        )
        last = rows[-1][0]


def downgrade() -> None:
    op.execute("DROP TABLE entry_search")
