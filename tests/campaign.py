"""The hostile-input campaign of issue 20: run the hostile and fault test files and write their cases as a table.

    .venv/bin/python tests/campaign.py            # run every case, rewrite the table in docs/failure-modes.md
    .venv/bin/python tests/campaign.py --print    # run every case, print the table instead
    .venv/bin/python tests/campaign.py -k lock    # a subset (pytest -k), printed only: never a partial table

Every test case (each parametrised id is one case) of the files in FILES runs through pytest, in this process,
with a small plugin that records what each case produced: the one-line `error:` a test checked, the exception a
`pytest.raises` caught, a CLI exit code, a hybridrec warning. The table gives per case: the issue's class and the
area, the case, what the test asserts (EXPECTED below) and what was observed. A case is clean when its test
passed. Exit code 0 when every case is clean and there are at least MIN_CASES of them, else 1.

This file is not a test module (no `test_` prefix, no test functions): pytest never collects it.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
DOC = REPO / "docs" / "failure-modes.md"
START, END = "<!-- campaign:start -->", "<!-- campaign:end -->"
MIN_CASES = 100
FILES = ["test_hostile_inputs.py", "test_hostile_model.py", "test_faults.py", "test_security.py", "test_signals.py"]
COMMAND = ".venv/bin/python tests/campaign.py"

# Per test function: (issue class, area, the case, what the test asserts). Class numbers are issue 20's; `faults`
# and `security` are the older guarantees (tests/test_faults.py, tests/test_security.py) the issue requires to hold.
# A parametrised test's case gets its parameters appended.
CONFIG, DATA, MODEL, QUERIES = "config", "data", "model folder", "queries"
SIGNALS, CONCURRENCY = "signals", "concurrency"
FIT, DISK, CACHE, SECURITY = "fit & publish", "disk", "text cache", "security"
EXPECTED: dict[str, tuple[str, str, str, str]] = {
    # ---------------------------------------------------------------------------- test_hostile_inputs.py, class 1
    "test_a_float_written_without_a_dot_is_a_number_in_yaml": (
        "1", CONFIG, "a YAML float without a dot (PyYAML reads `1e-3` as a string)",
        "read as that float, no TypeError"),
    "test_a_float_without_a_dot_is_a_number_from_set_in_lists_and_in_terms": (
        "1", CONFIG, "`--set train.lr=1e-3`, `rating_range=[1e0, 5e0]`, a term's `l2: 5e2`",
        "floats 0.001, [1.0, 5.0], 500.0"),
    "test_a_word_where_a_float_belongs_is_one_line_naming_the_key": (
        "1", CONFIG, "a word where a float belongs (`--set train.lr=WORD`)",
        "ConfigError `train.lr: expected a number, got ...`"),
    "test_a_word_where_a_float_belongs_exits_2_from_the_cli": (
        "1", CONFIG, "`hybridrec fit --set train.lr=fast`",
        "exit 2, one line `train.lr: expected a number, got 'fast'`; nothing published"),
    "test_a_float_that_overflows_is_out_of_range_not_inf": (
        "1", CONFIG, "`train.lr=1e999` (overflows to inf)", "ConfigError `train.lr: inf is out of range`"),
    "test_sizes_have_upper_bounds": (
        "1", CONFIG, "a size far above what can be allocated",
        "ConfigError `KEY: VALUE is out of range [lo, hi]` before any allocation"),
    "test_a_huge_dim_from_the_cli_is_a_config_error_not_an_allocation": (
        "1", CONFIG, "`hybridrec fit --set model.dim=100000000000`",
        "exit 2, one line `model.dim: 100000000000 is out of range [1, 4096]`; nothing published"),
    "test_sizes_at_their_bound_are_accepted": (
        "1", CONFIG, "`index.M=10000`, `model.dim=4096`, `features.tfidf_dim=4096` (at the bound)", "accepted"),
    "test_a_yaml_alias_bomb_is_refused_without_expanding_it": (
        "1", CONFIG, "a YAML alias bomb (9 levels of 9 aliases) as `name`",
        "exit 2, one line under 300 characters naming the YAML aliases; no hang"),
    "test_an_alias_bomb_in_a_set_value_is_refused": (
        "1", CONFIG, "an alias bomb in a `--set` value", "ConfigError naming the YAML aliases"),
    "test_a_small_alias_graph_is_fine_and_messages_stay_short": (
        "1", CONFIG, "59,049 aliased strings (within the bound) as `name`",
        "ConfigError `name: expected a string, got {...` under 300 characters"),
    "test_a_huge_value_in_an_error_message_is_cut_short": (
        "1", CONFIG, "`train.lr=` a 100,000-character word",
        "ConfigError `train.lr: expected a number, got 'xxx...` under 200 characters"),
    "test_a_score_term_that_is_no_mapping_or_names_no_type_is_one_short_line": (
        "1", CONFIG, "a score term whose type is a list or a mapping, or a 50,000-item list",
        "ConfigError naming `model.terms[0]`, under 200 characters (no TypeError)"),
    "test_mapping_values_are_typed_too": (
        "1", CONFIG, "a list or a mapping as a data path or a column name",
        "exit 2, one line naming the key and the value"),
    "test_dates_and_numbers_where_text_belongs_are_that_text": (
        "1", CONFIG, "an unquoted date or number where text belongs",
        "kept as the text written; the job settings save as strict JSON"),
    "test_values_a_config_cannot_save_are_refused_before_training": (
        "1", CONFIG, "a YAML set, bytes, NaN or a 5000-digit number in the config",
        "ConfigError naming the key, before training"),
    "test_a_huge_unknown_key_is_cut_short_too": (
        "1", CONFIG, "an unknown key of 100,000 characters",
        "ConfigError `unknown config key ...` under 300 characters"),
    "test_yaml_nested_too_deeply_is_one_line": (
        "5", CONFIG, "a config of `[` x 200,000", "exit 2, one line naming the file and `nested too deeply`"),
    "test_a_config_deeper_than_the_bound_is_refused": (
        "5", CONFIG, "a config value nested 150 deep", "ConfigError `nested deeper than 100`"),
    "test_a_key_given_twice_names_the_key_and_both_lines": (
        "1", CONFIG, "a key given twice in one YAML mapping",
        "exit 2, one line `FILE, line N: key 'K' is given twice in one mapping (first on line M)`"),
    "test_a_key_given_twice_in_a_set_value_is_an_error": (
        "1", CONFIG, "a key given twice inside a `--set` value", "ConfigError `key 'type' is given twice`"),
    "test_a_yaml_merge_key_is_not_a_duplicate": (
        "1", CONFIG, "a YAML merge key `<<:` overridden in the mapping", "accepted: epochs 5 (the override), lr 0.01"),
    "test_a_data_key_the_format_does_not_use_is_an_error_listing_its_keys": (
        "1", CONFIG, "`--data ratngs=PATH` (a key the format does not use)",
        "exit 2, one line `data.paths.ratngs: not used by format 'table' (it uses ...)`"),
    "test_an_unused_data_key_suggests_the_close_one": (
        "1", CONFIG, "a data key one letter off", "ConfigError `not used by format ...; did you mean '...'`"),
    "test_every_reader_lists_its_data_keys_and_accepts_them": (
        "1", CONFIG, "every format with all of its data keys", "accepted; the README lists every key"),
    "test_a_bad_limit_in_the_environment_is_one_line": (
        "5", CONFIG, "`HYBRIDREC_MAX_LINE_BYTES=lots`",
        "ConfigError `HYBRIDREC_MAX_LINE_BYTES: expected a non-negative integer, got 'lots'`"),
    # ---------------------------------------------------------------------------- test_hostile_inputs.py, class 5
    "test_a_table_jsonl_line_nested_too_deeply_is_one_line": (
        "5", DATA, "a table JSONL line of `[` x 200,000",
        "exit 2, one line `r.jsonl, line 2: not valid JSON (nested too deeply)`"),
    "test_a_score_new_jsonl_nested_too_deeply_is_one_line": (
        "5", QUERIES, "a `score-new` JSONL line of `[` x 200,000",
        "DataError `new.jsonl:1: malformed JSON (nested too deeply)`"),
    "test_a_manifest_nested_too_deeply_is_one_line": (
        "5", MODEL, "a manifest of `[` x 200,000",
        "exit 2, one line `manifest.json: corrupted (not valid JSON: nested too deeply)`"),
    "test_a_manifest_that_is_a_pipe_is_refused_not_read_forever": (
        "5", MODEL, "a manifest that is a FIFO", "exit 2, one line `manifest.json: not a regular file`; no hang"),
    "test_a_manifest_linked_to_dev_zero_is_refused": (
        "5", MODEL, "a manifest linked to `/dev/zero`", "exit 2, one line naming manifest.json; no MemoryError"),
    "test_a_manifest_over_the_size_limit_is_refused": (
        "5", MODEL, "a 5 KB manifest with `HYBRIDREC_MAX_JSON_BYTES=1000`",
        "exit 2, one line `... more than the 1000 allowed (HYBRIDREC_MAX_JSON_BYTES)`"),
    "test_a_model_json_file_nested_too_deeply_is_one_line": (
        "5", MODEL, "a model JSON file of `[` x 200,000 (checksum rewritten)",
        "exit 2, one line naming the file and `nested too deeply`"),
    "test_a_display_row_nested_too_deeply_is_one_line": (
        "5", MODEL, "a display row of `[` x 200,000 (offsets and checksums rewritten), shown by `similar`",
        "exit 2, one line naming display/rows.jsonl, row 0 and `nested too deeply`"),
    "test_a_gzip_line_bomb_with_default_limits_is_one_line": (
        "5", DATA, "a 100 KB gzip expanding to one 100 MB line (default limits)",
        "exit 2, one line naming r.csv.gz (gzip bomb or line over 64 MiB)"),
    "test_a_long_line_is_refused_at_the_configured_limit": (
        "5", DATA, "a 10,000-byte line with `HYBRIDREC_MAX_LINE_BYTES=4096`",
        "DataError `a line is longer than 4096 bytes (raise HYBRIDREC_MAX_LINE_BYTES ...`; 0 lifts the bound"),
    "test_a_gzip_with_one_endless_line_is_refused_by_every_reader": (
        "5", DATA, "8 KB of gzip expanding to one 8 MB line, limit 1 MiB",
        "DataError `FILE: a line is longer than 1048576 bytes`"),
    "test_a_gzip_of_valid_rows_beyond_the_ratio_is_refused": (
        "5", DATA, "a gzip of valid rows expanding more than 100x",
        "DataError `decompresses to more than N bytes ... gzip bomb`; with the ratio bound off, all rows read"),
    "test_the_ratio_limit_is_configurable": (
        "5", DATA, "a 5x gzip, then `HYBRIDREC_MAX_GZIP_RATIO=2`", "all 20,000 rows read; then DataError `gzip bomb`"),
    "test_score_new_is_bounded_too": (
        "5", QUERIES, "a `score-new` line of 5000 bytes, limit 1000",
        "DataError `new.jsonl: a line is longer than 1000 bytes`"),
    "test_a_score_new_file_that_is_a_pipe_is_refused": (
        "5", QUERIES, "a `score-new` file that is a FIFO", "DataError `new.jsonl: not a regular file`; no hang"),
    "test_a_config_file_over_the_size_limit_is_refused": (
        "5", CONFIG, "a 5 KB config with `HYBRIDREC_MAX_JSON_BYTES=2000`",
        "ConfigError `big.yaml: more than 2000 bytes`"),
    "test_real_sized_data_reads_within_the_default_limits": (
        "5", DATA, "the demo data under the default bounds", "every distinct (user, item) pair read"),
    "test_the_line_check_finds_a_long_line_inside_one_big_read": (
        "5", DATA, "a 5000-byte line between short ones, in one read", "refused at a limit of 4999, accepted at 5000"),
    # --------------------------------------------------------------------------- test_hostile_inputs.py, class 10
    "test_a_nul_byte_in_an_id_is_a_counted_bad_row": (
        "10", DATA, "a NUL byte inside a user id and an item id (csv)",
        "2 counted skips `id with a NUL byte`; no new item"),
    "test_an_id_that_is_a_list_or_a_mapping_is_a_counted_bad_row": (
        "10", DATA, "a JSON list or mapping as an id", "2 counted skips `id that is not a single value`"),
    "test_nul_ids_in_an_item_table_are_counted_too": (
        "10", DATA, "a NUL byte in an item table's id", "1 counted skip `item_id with a NUL byte`"),
    "test_a_nul_byte_in_amazon_movielens_and_goodbooks_ids_is_counted": (
        "10", DATA, "a NUL byte in an amazon, movielens-1m and goodbooks id", "1 counted skip per reader"),
    "test_a_nul_byte_in_a_new_item_id_is_an_error": (
        "10", QUERIES, "a NUL byte in a `score-new` item id", "DataError `new.csv:3: item_id holds a NUL byte`"),
    "test_words_pandas_reads_as_missing_are_ids_in_a_csv": (
        "10", DATA, "ids `NaN`, `None`, `null`, `NA`, `N/A`, `<NA>` ... in a csv",
        "kept as ids; only the empty cell is a counted skip"),
    "test_ids_in_json_lines_are_kept_as_written": (
        "10", DATA, "JSONL ids `007`, `NaN`, `None`, `null`, `1e400`, `42.0`",
        "kept as written (`1e400`, `42`), never inf or missing"),
    "test_words_are_ids_in_goodbooks_and_online_retail": (
        "10", DATA, "those words as goodbooks user ids and online-retail stock codes", "kept as ids"),
    "test_score_new_json_ids_stay_as_written": (
        "10", QUERIES, "a `score-new` JSON id", "the id as written (`1e400`, not `inf`); other numbers stay numbers"),
    "test_score_new_csv_ids_that_look_missing_are_ids": (
        "10", QUERIES, "a `score-new` csv id that looks missing", "kept as the id; a missing price stays missing"),
    "test_resume_after_a_change_says_it_starts_over_and_why": (
        "10", SIGNALS, "`--resume` after a change",
        "one warning line `(WHY); starting over at epoch 1`; nothing restored"),
    "test_resume_with_no_checkpoint_says_so_and_a_plain_fit_says_nothing": (
        "10", SIGNALS, "`--resume` with no checkpoint; a fit without `--resume`",
        "one warning `--resume: no checkpoint at PATH; starting at epoch 1`; the plain fit says nothing"),
    "test_resume_of_the_same_run_restores_without_a_notice": (
        "10", SIGNALS, "`--resume` of the same run", "restored at epoch 1, no warning"),
    "test_evaluate_on_rows_the_model_trained_on_is_refused_with_counts": (
        "10", DATA, "`evaluate --config` with another seed (test rows overlap training)",
        "exit 2, one line `N of M test rows are (user, item) pairs the model was fitted on`"),
    "test_the_fits_own_split_has_no_overlap": (
        "10", DATA, "the overlap count on the fit's own split", "0 on its test rows, 25 of 25 on training rows"),
    "test_info_on_a_metrics_file_that_is_a_list_is_clean": (
        "10", MODEL, "`info` and `info --json` on a `metrics.json` that is a list",
        "exit 0 with nothing on stderr, or exit 2 with one line naming metrics.json"),
    "test_a_checkpoints_folder_planted_as_a_link_is_refused": (
        "10", FIT, "`OUT/.checkpoints` planted as a link elsewhere",
        "exit 2, one line `.checkpoints must be a plain folder`; nothing written through it; the docs agree"),
    "test_amazon_numeric_ids_stay_as_written": (
        "10", DATA, "amazon ids `1e400` and `7.50` as JSON numbers", "kept as written"),
    # -------------------------------------------------------------------------------------- test_hostile_model.py
    "test_a_diverging_fit_stops_with_one_line_and_latest_does_not_move": (
        "2", FIT, "`fit --set train.lr=1e10` (the loss diverges) over a published model",
        "exit 2, one line naming epoch 1 and train.lr; `latest` and its answers unchanged; nothing partial"),
    "test_index_M_above_hnswlibs_cap_is_a_config_error_before_any_work": (
        "2", FIT, "`fit --set index.M=100000000`", "exit 2, one line naming index.M; nothing published"),
    "test_a_save_of_non_finite_state_is_refused_and_the_old_model_kept": (
        "2", FIT, "a save of non-finite state", "ModelFileError `... not finite` naming it; the old model kept"),
    "test_a_save_that_would_not_load_back_is_not_published": (
        "2", FIT, "a save with index M above hnswlib's cap (would never load)",
        "ModelFileError `does not load back` naming index/index.json; the old model kept"),
    "test_two_concurrent_score_new_add_runs_lose_no_item": (
        "3", CONCURRENCY, "two `score-new --add` runs at once on one model",
        "each run: exit 0 and its item in the model, or exit 2 `retry` and its item absent; none lost"),
    "test_a_save_over_a_model_that_changed_since_load_is_refused": (
        "3", CONCURRENCY, "two writers load one version; the second saves after the first",
        "ModelFileError `changed since it was loaded ... retry`; the first writer's item kept"),
    "test_score_new_add_waits_for_the_lock_then_fails_with_one_line": (
        "3", CONCURRENCY, "`score-new --add` while another writer holds the lock (timeout 1 s)",
        "exit 2, one line `another process is updating ...`; the item not added"),
    "test_sampled_negatives_leave_out_a_user_who_had_every_item": (
        "4", DATA, "sampled negatives for a user who had every item",
        "returns within 20 s; that user left out; the others' negatives are items they lack"),
    "test_a_fit_with_a_power_user_on_a_tiny_catalogue_ends_with_metrics": (
        "4", FIT, "`fit` with a power user on a 6-item catalogue", "exit 0, metrics in [0, 1], the model published"),
    "test_checkpoint_past_the_file_size_limit_is_one_line_and_leaves_nothing": (
        "6", DISK, "`fit` under `ulimit -f` 1 MB (the checkpoint does not fit)",
        "exit 2, one line `error: .../.checkpoints/demo.safetensors: File too large`; no partial file; old model kept"),
    "test_add_save_past_the_file_size_limit_is_one_line_and_keeps_the_model": (
        "6", DISK, "`score-new --add` under `ulimit -f` 300 KB",
        "exit 2, one line `error: MODEL/FILE: File too large`; the model unchanged"),
    "test_disk_errors_without_a_cause_get_one": (
        "6", DISK, "a SafetensorError saying `No space left on device`; an EFBIG OSError",
        "an OSError with errno ENOSPC / EFBIG and the path"),
    "test_numpys_causeless_write_error_is_diagnosed": (
        "6", DISK, "numpy's `N requested and M written` under `ulimit -f`",
        "errno 27 `File too large` naming the file at the limit"),
    "test_a_damaged_and_rechecksummed_model_file_is_refused_naming_it": (
        "7", MODEL, "a model file changed and its checksum rewritten",
        "ModelFileError naming that file, one line, within 60 s"),
    "test_a_negative_format_version_is_refused": (
        "7", MODEL, "`format_version: -1` in the manifest", "ModelFileError `manifest.json: corrupted`"),
    "test_the_cli_refuses_shifted_ids_with_one_line": (
        "7", MODEL, "`recommend` on item ids shifted by one row (checksum rewritten)",
        "exit 2, one line naming id_maps/items.json"),
    "test_a_huge_size_in_model_json_is_refused_before_the_network_is_allocated": (
        "7", QUERIES, "`history_items: 2**30` in model.json, then a free-text query",
        "ModelFileError `weights.safetensors: the weights do not match`; nothing allocated"),
    "test_a_text_width_unlike_the_encoders_is_refused": (
        "7", QUERIES, "a text width unlike the encoder's (model.json and features.json agree)",
        "ModelFileError naming the width or item_text.npy; the shared cache kept"),
    "test_nan_in_a_score_terms_array_is_refused": (
        "7", MODEL, "NaN in a score term's array (checksum rewritten)",
        "ModelFileError `terms/ease/weights.npy: holds values that are not finite`"),
    "test_metrics_linked_to_etc_passwd_is_refused": (
        "8", MODEL, "`metrics.json` linked to `/etc/passwd` (checksum rewritten)",
        "ModelFileError and exit 2, one line `metrics.json: a link inside the model folder`"),
    "test_a_link_to_an_identical_file_outside_the_folder_is_refused": (
        "8", MODEL, "a model file or folder moved outside and linked back (checksum matches)",
        "ModelFileError `a link inside the model folder`"),
    "test_the_text_cache_of_a_loaded_model_is_never_the_models_choice": (
        "8", QUERIES, "a model whose config.json sets `features.cache_dir`, then a free-text query",
        "the cache goes to `$HYBRIDREC_CACHE_DIR`; the planted folder is never created"),
    "test_a_damaged_cache_shard_is_dropped_with_one_warning_and_rebuilt": (
        "9", CACHE, "a damaged text-cache shard",
        "one warning line; the right vectors; everything encoded again once, then served from the cache"),
    "test_a_shard_that_is_not_a_zip_is_dropped": (
        "9", CACHE, "a text-cache shard that is not a zip", "the right vectors"),
    "test_the_old_layouts_corrupted_key_file_is_a_rebuild_not_an_indexerror": (
        "9", CACHE, "the 0.2 cache layout with a row number out of range",
        "both texts encoded again, the right vectors; no IndexError"),
    "test_a_valid_old_layout_cache_is_kept": (
        "9", CACHE, "a valid cache in the 0.2 layout", "served without encoding, then migrated"),
    "test_two_writers_interleaved_keep_both_sets_of_entries": (
        "9", CONCURRENCY, "two cache writers interleaved", "both writers' entries served from the cache afterwards"),
    "test_concurrent_processes_sharing_the_cache_lose_no_entries": (
        "9", CONCURRENCY, "3 processes x 20 entries into one text cache",
        "all exit 0; all 60 entries served from the cache; at most 17 shards"),
    # -------------------------------------------------------------------------------------------- test_faults.py
    "test_every_damaged_file_is_named_on_load": (
        "faults", MODEL, "every model file in turn damaged",
        "ModelFileError naming exactly that file, one line, on load"),
    "test_cli_names_the_damaged_file_in_one_line": (
        "faults", MODEL, "`similar` on a model with a file cut to 50 bytes", "exit 2, one line naming the file"),
    "test_damaged_files_with_a_matching_checksum_still_fail_cleanly": (
        "faults", MODEL, "every model file damaged, checksum rewritten, then every query",
        "ModelFileError naming the file, never another exception"),
    "test_a_crafted_index_header_is_refused_before_hnswlib_reads_it": (
        "faults", MODEL, "an hnswlib header with its entry point out of range (checksum rewritten)",
        "ModelFileError naming items.hnsw; the process does not crash"),
    "test_a_newer_format_version_names_the_version_this_hybridrec_reads": (
        "faults", MODEL, "a model of the next format version",
        "ModelFileError naming both versions; `info` exits 2 with one line"),
    "test_queries_never_see_a_half_written_model": (
        "faults", CONCURRENCY, "a reader process and a reader thread querying while two models are saved in turn",
        "every answer is one of the two models; no failed load; at least 10 saves"),
    "test_sigkill_during_fit_and_save": (
        "faults", SIGNALS, "SIGKILL during 2 fits (training, saving) and 10 saves",
        "after each kill the model loads and answers exactly as before (a killed save may leave a `tmp-*` staging "
        "folder, swept an hour later)"),
    "test_a_signal_during_fit_leaves_the_previous_model_and_resume_finishes": (
        "faults", SIGNALS, "SIGINT / SIGTERM to `hybridrec fit` after its first checkpointed epoch",
        "no traceback (SIGINT: exit 130, `interrupted`); the published model answers as before; no staging folder; "
        "`--resume` continues after the checkpointed epoch and exits 0"),
    # ------------------------------------------------------------------------------------------ test_security.py
    "test_no_source_file_can_execute_code_from_data": (
        "security", SECURITY, "the source scanned for pickle, eval/exec, unsafe YAML, unsafe torch/np loads",
        "no such site"),
    "test_the_scanner_catches_what_it_looks_for": (
        "security", SECURITY, "a file with 6 planted unsafe sites", "the scanner finds all 6"),
    "test_a_planted_pkl_and_pt_file_are_never_opened": (
        "security", MODEL, "a `.pkl` and a `.pt` planted in a model (listed in the manifest)",
        "the model loads and answers; the payload never runs"),
    "test_weights_replaced_by_a_torch_pickle_are_refused_unexecuted": (
        "security", MODEL, "the weights replaced by a torch pickle (checksum rewritten)",
        "ModelFileError naming weights.safetensors; the payload never runs"),
    "test_pickled_object_arrays_are_refused_unexecuted": (
        "security", MODEL, "a pickled object array in place of a vector file",
        "ModelFileError naming the file; the payload never runs"),
    "test_pickled_tfidf_arrays_are_never_unpickled": (
        "security", MODEL, "pickled TF-IDF arrays", "ModelFileError naming TF-IDF; the payload never runs"),
    "test_a_pickle_in_the_text_cache_is_dropped_not_unpickled": (
        "security", CACHE, "a pickle in the text cache", "the cache is dropped; the payload never runs"),
    "test_a_yaml_python_tag_is_a_config_error_not_a_call": (
        "security", CONFIG, "a `!!python/object/apply:os.mkdir` tag in a config",
        "ConfigError `not valid YAML`; nothing called"),
    "test_any_config_name_gives_one_folder_inside_out": (
        "security", CONFIG, "60 generated model names (`..`, `/etc/x`, NUL, ...)",
        "refused, or exactly one plain folder directly inside `--out`"),
    "test_a_hostile_name_and_planted_links_keep_a_fit_inside_out": (
        "security", FIT, "`name: ../../escape` with `out/escape` planted as a link outside",
        "nothing written outside `--out`; the link replaced"),
    "test_a_link_chain_out_of_the_output_folder_is_not_followed": (
        "security", FIT, "`out/demo` a chain of links leading outside",
        "the save replaces `out/demo`; nothing outside"),
    "test_a_versions_folder_planted_as_a_link_is_refused": (
        "security", FIT, "`.demo.versions` planted as a link", "ModelFileError naming .demo.versions; nothing outside"),
    "test_latest_planted_as_a_link_elsewhere_is_replaced_not_written_through": (
        "security", FIT, "`latest` planted as a link elsewhere", "`latest -> demo`; nothing written elsewhere"),
}  # fmt: skip


# ------------------------------------------------------------------------------------------------- recording
@dataclass
class Case:
    nodeid: str
    function: str
    params: dict[str, Any] = field(default_factory=dict)
    outcome: str = "not run"  # passed, failed, error, skipped
    detail: str = ""  # the first line of a failure, or a skip's reason
    events: list[tuple[str, str]] = field(default_factory=list)
    stdout: str = ""


class Recorder:
    """The pytest plugin: which case runs now, what it produced, and how it ended."""

    def __init__(self) -> None:
        self.cases: dict[str, Case] = {}
        self.current: Case | None = None

    def add(self, kind: str, text: str) -> None:
        if self.current is not None:
            self.current.events.append((kind, text))

    # hooks
    def pytest_collection_finish(self, session: pytest.Session) -> None:
        for item in session.items:
            function = getattr(item, "originalname", None) or item.name.split("[")[0]
            params = dict(getattr(getattr(item, "callspec", None), "params", {}) or {})
            self.cases[item.nodeid] = Case(item.nodeid, function, params)
            module = getattr(item, "module", None)
            if module is not None:
                instrument_module(module, self)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_call(self, item: pytest.Item):
        self.current = self.cases.get(item.nodeid)
        handler = WarningHandler(self)
        logging.getLogger().addHandler(handler)
        try:
            return (yield)
        finally:
            logging.getLogger().removeHandler(handler)
            self.current = None

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        case = self.cases.get(report.nodeid)
        if case is None:
            return
        if report.when == "call":
            case.stdout = report.capstdout
        if report.skipped and case.outcome in ("not run", "passed"):
            reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
            case.outcome, case.detail = "skipped", reason.removeprefix("Skipped: ")
        elif report.failed and case.outcome != "failed":
            case.outcome = "failed" if report.when == "call" else "error"
            case.detail = first_line(report)
            if report.when != "call":
                case.detail = f"in {report.when}: {case.detail}"
        elif report.passed and report.when == "call" and case.outcome == "not run":
            case.outcome = "passed"


class WarningHandler(logging.Handler):
    def __init__(self, recorder: Recorder) -> None:
        super().__init__(logging.WARNING)
        self.recorder = recorder

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith("hybridrec"):
            self.recorder.add("warning", record.getMessage())


def first_line(report: pytest.TestReport) -> str:
    crash = getattr(report.longrepr, "reprcrash", None)
    text = crash.message if crash is not None else str(report.longrepr)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[0] if lines else "(no message)"


def instrument(recorder: Recorder) -> None:
    """Record what `pytest.raises` caught and what CLI runs returned, for the case that is running."""
    original = pytest.raises

    class Recording:
        def __init__(self, inner: Any) -> None:
            self.inner = inner

        def __enter__(self) -> Any:
            return self.inner.__enter__()

        def __exit__(self, kind: Any, value: Any, tb: Any) -> Any:
            suppressed = self.inner.__exit__(kind, value, tb)
            if suppressed and value is not None:
                recorder.add("raised", f"{type(value).__name__}\t{value}")
            return suppressed

    def raises(*args: Any, **kwargs: Any) -> Any:
        outcome = original(*args, **kwargs)
        if isinstance(outcome, pytest.ExceptionInfo):  # the function form has already run
            recorder.add("raised", f"{outcome.type.__name__}\t{outcome.value}")
            return outcome
        return Recording(outcome)

    pytest.raises = raises  # type: ignore[assignment]

    from typer.testing import CliRunner

    invoke = CliRunner.invoke

    def recorded_invoke(self: CliRunner, *args: Any, **kwargs: Any) -> Any:
        result = invoke(self, *args, **kwargs)
        try:
            err = result.stderr
        except ValueError:
            err = ""
        lines = [ln for ln in err.splitlines() if ln.strip()]
        recorder.add("cli", f"{result.exit_code}\t{lines[0] if lines else ''}\t{len(lines)}")
        return result

    CliRunner.invoke = recorded_invoke  # type: ignore[method-assign]


def instrument_module(module: Any, recorder: Recorder) -> None:
    """Wrap the test modules' own checks of a one-line error and their CLI runner, once per module."""
    if getattr(module, "_campaign_instrumented", False):
        return
    module._campaign_instrumented = True
    for name in ("assert_one_line_error", "one_error_line"):
        check = getattr(module, name, None)
        if callable(check):

            def checked(*args: Any, _check: Any = check, **kwargs: Any) -> Any:
                line = _check(*args, **kwargs)
                recorder.add("line", str(line))
                return line

            setattr(module, name, checked)
    read = getattr(module, "read_dataset", None)
    if callable(read):

        def recorded_read(*args: Any, _read: Any = read, **kwargs: Any) -> Any:
            dataset = _read(*args, **kwargs)
            for report in dataset.reports:
                recorder.add("read", report.summary())
            return dataset

        module.read_dataset = recorded_read
    read_new = getattr(module, "read_new_items", None)
    if callable(read_new):

        def recorded_new(*args: Any, _read: Any = read_new, **kwargs: Any) -> Any:
            frame = _read(*args, **kwargs)
            recorder.add("new", ", ".join(map(str, frame["item_id"].tolist()[:5])))
            return frame

        module.read_new_items = recorded_new
    if getattr(module, "subprocess", None) is subprocess:
        module.subprocess = RecordingSubprocess(recorder)
    run_cli = getattr(module, "run_cli", None)
    if callable(run_cli):

        def recorded_run(*args: Any, _run: Any = run_cli, **kwargs: Any) -> Any:
            done = _run(*args, **kwargs)
            errors = [ln for ln in (done.stderr or "").splitlines() if ln.startswith("error: ")]
            recorder.add("proc", f"{done.returncode}\t{errors[0] if errors else ''}")
            return done

        module.run_cli = recorded_run


# Figures worth showing from a child's JSON summary (tests/fault_kill.py --json, `fit --json`).
FIGURES = ("kills", "fit_kills", "save_kills", "loads_intact", "fit_staging_left", "save_staging_left")
METRICS = ("hr@10_sampled", "recall@10")


class RecordingSubprocess:
    """Stands in for a test module's `subprocess`: `run` also records the figures of a JSON summary it printed."""

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder

    def __getattr__(self, name: str) -> Any:
        return getattr(subprocess, name)

    def run(self, *args: Any, **kwargs: Any) -> Any:
        done = subprocess.run(*args, **kwargs)
        out = done.stdout if isinstance(done.stdout, str) else ""
        lines = out.strip().splitlines()
        try:
            summary = json.loads(lines[-1]) if lines else None
        except ValueError:
            summary = None
        if isinstance(summary, dict):
            metrics = summary.get("metrics") if isinstance(summary.get("metrics"), dict) else {}
            shown = [f"{k} {summary[k]}" for k in FIGURES if k in summary]
            shown += [f"{k} {metrics[k]:.4g}" for k in METRICS if isinstance(metrics.get(k), (int, float))]
            if shown:
                self.recorder.add("figures", ", ".join(shown))
        return done


# ------------------------------------------------------------------------------------------------- the table
class Cleaner:
    """Shorten what a case printed: temporary folders become $TMP, the checkout's path is dropped."""

    def __init__(self, basetemp: Path) -> None:
        self.tmp = re.compile(re.escape(str(basetemp)) + r"/[^/\s'\"]+")
        self.repo = str(REPO) + "/"

    def __call__(self, text: str, limit: int = 160) -> str:
        text = escape(self.tmp.sub("$TMP", str(text)).replace(self.repo, ""))
        return text if len(text) <= limit else text[: limit - 1] + "…"


def code(text: str) -> str:
    """A markdown code span that survives backticks and table pipes."""
    text = text.replace("|", "\\|")
    fence = "``" if "`" in text else "`"
    pad = " " if fence == "``" else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


# Parameters that hold what a case must produce rather than its input: shown under "expected".
OUTCOME_PARAMS = ("expected", "message", "named", "why", "hint", "line", "first")


def escape(text: str) -> str:
    text = text.replace("\n", "\\n").replace("\t", "\\t")
    return re.sub(r"[\x00-\x1f\x7f]", lambda m: f"\\x{ord(m.group()):02x}", text)


def show_param(value: Any) -> str:
    if callable(value):
        text = getattr(value, "__name__", repr(value)).lstrip("_").replace("_", " ")
    elif isinstance(value, str):
        text = value
    else:
        text = repr(value)
    text = escape(text)
    return text if len(text) <= 60 else text[:59] + "…"


def show_params(params: dict[str, Any]) -> str:
    if len(params) == 1:
        return code(show_param(next(iter(params.values()))))
    return ", ".join(f"{name} {code(show_param(value))}" for name, value in params.items())


def describe(case: Case) -> tuple[str, str, str, str]:
    known = EXPECTED.get(case.function)
    if known is None:
        readable = case.function.removeprefix("test_").replace("_", " ")
        known = ("?", "?", readable, "as the test asserts (no EXPECTED entry in tests/campaign.py)")
    klass, area, what, expected = known
    what, expected = cell(what), cell(expected)
    inputs = {k: v for k, v in case.params.items() if k not in OUTCOME_PARAMS}
    outcomes = {k: v for k, v in case.params.items() if k in OUTCOME_PARAMS}
    if inputs:
        what += ": " + show_params(inputs)
    if outcomes:
        expected += "; here " + show_params(outcomes)
    return klass, area, what, expected


def observed(case: Case, clean: Cleaner) -> str:
    if case.outcome in ("failed", "error"):
        return f"**FAILED**: {code(clean(case.detail, 200))}"
    if case.outcome == "skipped":
        return f"**SKIPPED**: {cell(clean(case.detail))}"
    if case.outcome != "passed":
        return "**NOT RUN**"
    by_kind: dict[str, list[str]] = defaultdict(list)
    for kind, text in case.events:
        by_kind[kind].append(text)
    parts: list[str] = []
    lines = list(dict.fromkeys(by_kind["line"]))
    if lines:
        text = f"exit 2, one line: {code(clean(lines[0]))}"
        if len(by_kind["line"]) > 1:
            text = f"{len(by_kind['line'])} runs, each exit 2 with one line, e.g. {code(clean(lines[0]))}"
        parts.append(text)
    raised = [text.split("\t", 1) for text in by_kind["raised"]]
    if raised:
        kinds = Counter(kind for kind, _ in raised)
        name, message = raised[0]
        label = " / ".join(f"{n} x {k}" if n > 1 else k for k, n in kinds.items())
        prefix = f"{label}, e.g." if len(raised) > 1 else f"{label}:"
        parts.append(f"{prefix} {code(clean(message))}")
    if not lines:
        cli = [text.split("\t") for text in by_kind["cli"]]
        procs = [text.split("\t") for text in by_kind["proc"]]
        runs = [(c[0], c[1]) for c in cli] + [(p[0], p[1]) for p in procs]
        if runs:
            codes = Counter(exit_code for exit_code, _ in runs)
            summary = ", ".join(f"exit {c}" + (f" x {n}" if n > 1 else "") for c, n in sorted(codes.items()))
            first_error = next((err for _, err in runs if err), "")
            if first_error and cli and not procs and all(c[2] == "1" for c in cli if c[0] != "0"):
                summary += f", one line: {code(clean(first_error))}"
            elif first_error:
                summary += f" ({code(clean(first_error))})"
            elif cli and all(c[1] == "" for c in cli):
                summary += ", nothing on stderr"
            parts.append(summary)
    if by_kind["figures"]:
        parts.append("; ".join(dict.fromkeys(by_kind["figures"])))
    warnings = list(dict.fromkeys(by_kind["warning"]))
    if warnings:
        count = len(by_kind["warning"])
        parts.append(("one warning: " if count == 1 else f"{count} warnings, e.g. ") + code(clean(warnings[0])))
    reads = list(dict.fromkeys(by_kind["read"]))
    if reads:
        shown = "; ".join(code(clean(r, 200)) for r in reads[:3])
        parts.append(f"read {shown}" + (f" and {len(reads) - 3} more" if len(reads) > 3 else ""))
    if by_kind["new"]:
        parts.append("new item ids " + ", ".join(code(clean(ids)) for ids in dict.fromkeys(by_kind["new"])))
    if not parts:
        printed = [ln.strip() for ln in case.stdout.splitlines() if ln.strip()]
        if printed:
            parts.append(f"printed {code(clean(printed[-1], 200))}")
    return "; ".join(parts) if parts else "as expected (test passed)"


def table(cases: list[Case], clean: Cleaner) -> tuple[str, dict[str, int]]:
    totals = Counter(c.outcome for c in cases)
    counts = {
        "cases": len(cases),
        "clean": totals["passed"],
        "failed": totals["failed"] + totals["error"],
        "skipped": totals["skipped"],
        "not run": totals["not run"],
    }
    areas = Counter(describe(c)[1] for c in cases)
    classes = Counter(describe(c)[0] for c in cases)
    order = [str(n) for n in range(1, 11)] + ["faults", "security", "?"]
    out = [
        f"**{counts['cases']} cases: {counts['clean']} clean, {counts['failed']} failed**"
        + (f", {counts['skipped']} skipped" if counts["skipped"] else "")
        + (f", {counts['not run']} not run" if counts["not run"] else "")
        + ".",
        "",
        "By class: " + ", ".join(f"{k} ({classes[k]})" for k in order if classes[k]) + ".  ",
        "By area: " + ", ".join(f"{a} ({n})" for a, n in sorted(areas.items(), key=lambda kv: -kv[1])) + ".",
        "",
        "| # | class | area | case | expected | observed |",
        "|---|---|---|---|---|---|",
    ]
    for n, case in enumerate(cases, 1):
        klass, area, what, expected = describe(case)
        out.append(f"| {n} | {klass} | {area} | {what} | {expected} | {observed(case, clean)} |")
    return "\n".join(out), counts


SECTION = f"""## Hostile-input campaign (issue 20)

Every case of `tests/test_hostile_inputs.py` (issue 20's classes 1, 5 and 10), `tests/test_hostile_model.py`
(classes 2, 3, 4, 6, 7, 8 and 9), `tests/test_faults.py` and `tests/test_security.py`, one row per test case (each
parametrised id is one case). `tests/campaign.py` runs them through pytest and records what each case produced:
the one-line `error:` the test checked, the exception it expected, the CLI's exit code, a warning. *Expected* is
what the test asserts; `$TMP` is the run's temporary folder. A case is clean when its test passed: a one-line error
(exit code 2 from the CLI, one `HybridrecError` line from the library), a counted skip, or the right answer. The
same tests run in CI with the rest of the suite. Regenerate the table (several minutes; it fits the demo once):

```
{COMMAND}
```

{START}
{END}
"""


def write_doc(body: str) -> None:
    text = DOC.read_text(encoding="utf-8")
    if START not in text or END not in text:
        anchor = "\n## Known limitations"
        section = "\n" + SECTION
        text = text.replace(anchor, section + anchor, 1) if anchor in text else text.rstrip("\n") + "\n" + section
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    DOC.write_text(f"{head}{START}\n{body}\n{END}{tail}", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--print", action="store_true", help="print the table instead of writing the doc")
    parser.add_argument("-k", dest="keyword", help="run only the cases pytest -k selects (implies --print)")
    args = parser.parse_args(argv)

    recorder = Recorder()
    instrument(recorder)
    work = Path(tempfile.mkdtemp(prefix="hybridrec-campaign-")).resolve()
    basetemp = work / "t"
    pytest_args = [str(TESTS / name) for name in FILES]
    pytest_args += ["-q", "-o", "addopts=", "-p", "no:cacheprovider", f"--basetemp={basetemp}", f"--rootdir={REPO}"]
    if args.keyword:
        pytest_args += ["-k", args.keyword]
    try:
        exit_code = pytest.main(pytest_args, plugins=[recorder])
        body, counts = table(list(recorder.cases.values()), Cleaner(basetemp))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if exit_code not in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED):
        print(f"campaign: pytest stopped with {exit_code!r}", file=sys.stderr)
        return 1
    if args.print or args.keyword:
        print(body)
    else:
        write_doc(body)
        print(f"campaign: table written to {DOC.relative_to(REPO)}", file=sys.stderr)
    summary = ", ".join(f"{v} {k}" for k, v in counts.items() if v or k in ("cases", "clean", "failed"))
    print(f"campaign: {summary}", file=sys.stderr)
    all_clean = counts["clean"] == counts["cases"]
    return 0 if all_clean and (args.keyword or counts["cases"] >= MIN_CASES) else 1


if __name__ == "__main__":
    sys.exit(main())
