"""The prediction log: every served prediction, labelled later by feedback, read by monitoring, the shadow gate
and the backtest.

It sits below all of those (and below serving, which writes it), so it imports none of them: only the config,
the errors, the data schema and the workspace, whose `LogLocation` says where the log lives (a SQLite file or a
PostgreSQL database, decided once by `Workspace.prediction_log_location`).

    base        the column names, the clock, the statements and the backend interface both backends share
    writer      `PredictionLog`: the one writer thread, group commit, `log_rows`
    sqlite      the SQLite backend (one WAL file) and its reads
    postgres    the PostgreSQL backend (psycopg, imported only for such a log) and its reads
    read        `read_log`, `read_shadow_pairs`, `count_shadow_labels`: the log as frames, from either backend
    retention   what the log forgets: rows past `serve.log_retention_days`, one id's rows on request

The log's errors (`UnknownRequest`, `LabelCountMismatch`, `LogUnavailable`) are in `evergreen.errors`.
"""
