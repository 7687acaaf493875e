"""Flask's tutorial pattern ("flaskr"): ``sqlite3.connect`` kept on ``g`` for
the request, closed at teardown; register, login and a post list.

The database file is ``TUTORIAL_DB``, or a temporary file.
"""
from __future__ import annotations

import os
import sqlite3
import tempfile

from flask import Flask, g, request

DB = os.environ.get("TUTORIAL_DB") or os.path.join(tempfile.gettempdir(), f"flaskr-{os.getpid()}.sqlite")
SCHEMA = """
DROP TABLE IF EXISTS user;
DROP TABLE IF EXISTS post;
CREATE TABLE user (id INTEGER PRIMARY KEY AUTOINCREMENT, username TEXT UNIQUE NOT NULL, password TEXT NOT NULL);
CREATE TABLE post (id INTEGER PRIMARY KEY AUTOINCREMENT, author_id INTEGER NOT NULL, title TEXT NOT NULL);
"""

app = Flask(__name__)


def get_db() -> sqlite3.Connection:
    if "db" not in g:
        g.db = sqlite3.connect(DB, detect_types=sqlite3.PARSE_DECLTYPES)
        g.db.row_factory = sqlite3.Row
    return g.db


@app.teardown_appcontext
def close_db(exc=None):
    db = g.pop("db", None)
    if db is not None:
        db.close()


def init_db() -> None:
    with sqlite3.connect(DB) as db:
        db.executescript(SCHEMA)


@app.post("/register")
def register():
    db = get_db()
    try:
        db.execute("INSERT INTO user (username, password) VALUES (?, ?)",
                   (request.form["username"], request.form["password"]))
        db.commit()
    except db.IntegrityError:
        return {"error": "taken"}, 400
    return {"ok": True}


@app.post("/login")
def login():
    user = get_db().execute("SELECT * FROM user WHERE username = ?", (request.form["username"],)).fetchone()
    if user is None or user["password"] != request.form["password"]:
        return {"error": "bad login"}, 400
    return {"id": user["id"]}


@app.post("/posts")
def add_posts():
    db = get_db()
    cursor = db.cursor()
    cursor.executemany("INSERT INTO post (author_id, title) VALUES (?, ?)",
                       [(1, t) for t in request.form.getlist("title")])
    db.commit()
    return {"added": cursor.rowcount}


@app.get("/posts")
def posts():
    db = get_db()
    titles = [row["title"] for row in db.execute("SELECT title FROM post ORDER BY id")]
    authors = [db.execute("SELECT username FROM user WHERE id = ?", (1,)).fetchone()[0] for _ in titles]
    return {"titles": titles, "authors": authors}
