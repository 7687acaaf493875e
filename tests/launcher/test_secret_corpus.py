"""No secret reaches the store: a corpus of secret shapes, each sent through
every channel a program has, under ``scope-otel run`` at level ``full`` into
the embedded store, then looked for in the store by its own text.

Channels: positional argument, keyword (named and ``**kwargs``), nested dict
value, tuple header list, ``self`` attribute, HTTP request header, HTTP
response header, URL query string, SQL parameter (bound, and the dict of
parameters handed to a function) and SQL text (whose literals the SQL
integration records as ``?``).  A harmless control value
goes through the same channels and must be found in each: the channels reach
the store, so the absences are real.
"""
from __future__ import annotations

import base64
import os
import re
import subprocess
import sys
import textwrap

import pytest

from tests.support.procs import clean_env, run, tool

pytest.importorskip("flask")
pytest.importorskip("sqlalchemy")


def _marker(i: int) -> str:
    return f"Zq7s{i:02d}Kp4w9Vb2"  # alphanumeric, distinct, never a substring of another


def _corpus() -> list[tuple[str, str, str]]:
    """(key the value travels under, value, the secret's text to look for)."""
    named = [
        "password", "passwd", "pwd", "passphrase", "secret", "client_secret", "token", "access_token",
        "refresh_token", "id_token", "session_token", "auth_token", "api_key", "apikey", "api-key",
        "x-api-key", "X-API-Key", "authorization", "proxy-authorization", "cookie", "set-cookie",
        "sessionid", "private_key", "credentials", "aws_secret_access_key", "secret_key", "db_password",
    ]
    out = []
    for i, key in enumerate(named):
        m = _marker(i)
        value = {"authorization": f"Token {m}", "proxy-authorization": f"Digest username=u, response={m}",
                 "cookie": f"theme=dark; sid={m}", "set-cookie": f"csrftoken={m}; Path=/"}.get(key, m)
        out.append((key, value, m))
    i = len(named)

    def shape(make):
        nonlocal i
        m = _marker(i)
        i += 1
        value, secret = make(m)
        out.append(("note", value, secret))

    shape(lambda m: (f"Bearer {m}", m))
    shape(lambda m: (f"Authorization: Bearer {m}", m))
    basic = lambda m: base64.b64encode(f"deploy:{m}".encode()).decode()  # noqa: E731
    shape(lambda m: (f"Basic {basic(m)}", basic(m)))
    shape(lambda m: (f"-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA{m}\n-----END RSA PRIVATE KEY-----", m))
    shape(lambda m: (f"-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXk{m}\n-----END OPENSSH PRIVATE KEY-----", m))
    shape(lambda m: (f"postgres://app:{m}@db.example:5432/prod", m))
    shape(lambda m: (f"mysql+pymysql://root:{m}@127.0.0.1:3306/test", m))
    shape(lambda m: (f"redis://:{m}@cache:6379/0", m))
    shape(lambda m: (f"https://deploy:{m}@git.example.com/repo.git", m))
    shape(lambda m: (f"amqp://guest:{m}@rabbit:5672/", m))
    shape(lambda m: (f"host=db user=app password={m} dbname=prod", m))
    shape(lambda m: ('{"api_key": "%s", "page": 2}' % m, m))
    shape(lambda m: (f"eyJhbGciOiJIUzI1NiJ9.eyJ{m}.c2lnbmF0dXJlX3g", m))
    shape(lambda m: ((t := f"ghp_{m}{'a' * (36 - len(m))}"), t))
    shape(lambda m: ((t := f"sk_live_{m}4eC39HqLyj"), t))
    shape(lambda m: ((t := f"xoxb-{m}"), t))
    shape(lambda m: ((t := "AKIA" + m.upper()[:16].ljust(16, "Q")), t))
    shape(lambda m: ((t := f"glpat-{m}abcdef"), t))
    return out


CORPUS = _corpus()
CONTROL = ("note", "Zq7ctrlHarmlessVisible", "Zq7ctrlHarmlessVisible")


def _ident(key: str) -> str:
    return key.replace("-", "_")


def _program() -> str:
    """The instrumented module: one function per channel and per secret name."""
    rows = CORPUS + [CONTROL]
    lines = [
        "import sys, threading, urllib.parse, urllib.request",
        "from flask import Flask, request, make_response",
        "from sqlalchemy import create_engine, text",
        "from werkzeug.serving import make_server",
        "CASES = %r" % (rows,),
        "app = Flask(__name__)",
        "@app.route('/echo')",
        "def echo():",
        "    i = int(request.headers['X-Case'])",
        "    key, value, _ = CASES[i]",
        "    response = make_response('ok')",
        "    response.headers[key if key != 'note' else 'X-Note'] = value.replace(chr(10), ' ')",
        "    return response",
        "def keywords(**kwargs):",
        "    return len(kwargs)",
        "def nested(config):",
        "    return len(config)",
        "def send(headers):",
        "    return len(headers)",
        "def run_sql(conn, sql, params):",
        "    return conn.execute(text(sql), params).fetchall()",
    ]
    idents = sorted({_ident(k) for k, _, _ in rows})
    for ident in idents:
        lines += [
            f"def positional_{ident}({ident}):",
            f"    return len({ident})",
            f"class Holder_{ident}:",
            "    def keep(self, value):",
            f"        self.{ident} = value",
            "        return None",
        ]
    lines += [
        "def main():",
        "    server = make_server('127.0.0.1', 0, app)",
        "    threading.Thread(target=server.serve_forever, daemon=True).start()",
        "    base = f'http://127.0.0.1:{server.server_port}'",
        "    engine = create_engine('sqlite://')",
        "    with engine.connect() as conn:",
        "        for i, (key, value, _) in enumerate(CASES):",
        "            ident = key.replace('-', '_')",
        "            globals()['positional_' + ident](value)",
        "            globals()['positional_' + ident](**{ident: value})",
        "            keywords(**{key: value})",
        "            nested({'service': {'db': {key: value}}})",
        "            send([('Accept', 'text/plain'), (key, value)])",
        "            globals()['Holder_' + ident]().keep(value)",
        "            run_sql(conn, 'SELECT :' + ident + ' AS echoed', {ident: value})",
        "            if key == 'note':",
        "                conn.exec_driver_sql(\"SELECT '\" + value + \"' AS note\").fetchall()",
        "            else:",
        "                conn.exec_driver_sql(f\"WITH t({ident}) AS (SELECT 1) SELECT * FROM t WHERE {ident} = '{value}'\").fetchall()",
        "            header = key if key != 'note' else 'X-Note'",
        "            query = urllib.parse.urlencode({key: value})",
        "            req = urllib.request.Request(f'{base}/echo?{query}', headers={header: value.replace(chr(10), ' '), 'X-Case': str(i)})",
        "            assert urllib.request.urlopen(req, timeout=30).read() == b'ok'",
        "    server.shutdown()",
        "    print('corpus sent', len(CASES))",
    ]
    return "\n".join(lines) + "\n"


def _store_hits(store: str, cwd: str, needles: list[str]) -> dict[str, int]:
    """Rows of otel_traces and scope_events whose text holds each needle, by one query."""
    sql = textwrap.dedent(
        f"""
        SELECT n, countIf(position(row, n) > 0) AS hits
        FROM (SELECT formatRow('TSV', *) AS row FROM otel.otel_traces
              UNION ALL SELECT formatRow('TSV', *) AS row FROM otel.scope_events) AS rows
        CROSS JOIN (SELECT arrayJoin({needles!r}) AS n) AS needles
        GROUP BY n
        """
    )
    shown = subprocess.run([tool("scope-otel"), "query", "--store", store, "--format", "csv", sql],
                           capture_output=True, text=True, cwd=cwd, env=clean_env(), timeout=300)
    assert shown.returncode == 0, shown.stderr[-3000:]
    hits = {}
    for line in shown.stdout.splitlines()[1:]:
        needle, count = line.rsplit(",", 1)
        hits[needle.strip('"')] = int(count)
    assert set(hits) == set(needles), shown.stdout
    return hits


def _attribute_values(store: str, cwd: str, needle: str) -> str:
    sql = (f"SELECT SpanName, SpanAttributes, Events.Attributes FROM otel.otel_traces "
           f"WHERE position(formatRow('TSV', *), '{needle}') > 0")
    shown = subprocess.run([tool("scope-otel"), "query", "--store", store, "--format", "csv", sql],
                           capture_output=True, text=True, cwd=cwd, env=clean_env(), timeout=300)
    assert shown.returncode == 0, shown.stderr[-3000:]
    return shown.stdout


def test_no_secret_of_the_corpus_reaches_the_store_through_any_channel(tmp_path):
    assert len(CORPUS) >= 30
    (tmp_path / "corpusapp.py").write_text(_program())
    (tmp_path / "main.py").write_text("import corpusapp\ncorpusapp.main()\n")
    store = str(tmp_path / "store")
    env = clean_env(
        OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST=".*",
        OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_RESPONSE=".*",
        OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_CLIENT_REQUEST=".*",
        OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_CLIENT_RESPONSE=".*",
    )
    result = run([tool("scope-otel"), "run", "--level", "full", "--instrument", "corpusapp", "--store", store,
                  "--summary", "true", "--", sys.executable, "main.py"], env, cwd=str(tmp_path), timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    assert f"corpus sent {len(CORPUS) + 1}" in result.stdout
    # a span dropped by a failing conversion would hide a leak: none may be
    assert "could not convert" not in result.stderr and "Traceback" not in result.stderr, result.stderr[-3000:]
    # (a span the app's server thread ends after the exit flush began is reported as still queued:
    # not stored, but not a failed conversion either)
    destination = [line for line in result.stderr.splitlines() if line.strip().startswith("-> clickhouse")]
    assert destination and "failed" not in destination[0], result.stderr[-3000:]

    secrets = [secret for _, _, secret in CORPUS]
    hits = _store_hits(store, str(tmp_path), secrets + [CONTROL[2]])
    leaked = {s: n for s, n in hits.items() if s in secrets and n}
    assert not leaked, f"{len(leaked)} of {len(secrets)} secrets stored in clear: {leaked}"

    # the control went through every channel and was stored: the channels reach the store
    shown = _attribute_values(store, str(tmp_path), CONTROL[2])
    for where in ("scope.arg.note", "scope.arg.kwargs", "scope.arg.config", "scope.arg.headers",
                  "scope.arg.params", "self.note", "http.request.header.x-note", "http.response.header.x-note",
                  "url.query"):
        assert where in shown, (f"the control value never reached the store through {where}; the run's summary:\n"
                                + result.stderr[result.stderr.find("scope-otel summary"):][-3000:])
    # SQL text reaches the store too; the SQL integration records literals as '?' itself
    sql = _attribute_values(store, str(tmp_path), "SELECT ? AS note")
    assert "db.query.text" in sql, sql[-2000:]

    # every redaction was counted, and said in words
    counted = re.search(r"(\d+) values redacted", result.stderr)
    assert counted, result.stderr[-3000:]
    assert int(counted.group(1)) >= len(CORPUS) * 10, counted.group(0)
