"""UCI Online Retail reader: invoice lines -> implicit customer x product purchases weighted by quantity."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from hybridrec.data.dataset import Dataset, FeatureSchema
from hybridrec.data.io import (
    SourceReport,
    dataset_name,
    id_column,
    interactions_frame,
    not_single_ids,
    nul_ids,
    read_table,
    require_columns,
)

COLUMNS = ["InvoiceNo", "StockCode", "Description", "Quantity", "InvoiceDate", "UnitPrice", "CustomerID"]
# Postage, fees, discounts, manual adjustments, charity and gift vouchers: lines that are not products.
NON_PRODUCT_CODES = frozenset({"POST", "DOT", "M", "C2", "D", "S", "BANK CHARGES", "AMAZONFEE", "CRUK", "PADS", "B"})
_VOUCHER = re.compile(r"^gift_\d+_\d+$", re.IGNORECASE)


def is_non_product(code: str) -> bool:
    """Stock codes that are fees, postage, discounts or vouchers rather than products (case-insensitive)."""
    code = code.strip()
    return code.upper() in NON_PRODUCT_CODES or bool(_VOUCHER.match(code))


def _load(path: Path) -> pd.DataFrame:
    frame = read_table(
        path, text_columns=["StockCode", "CustomerID"], dtype={"InvoiceNo": str, "StockCode": str, "Description": str}
    )
    require_columns(frame, COLUMNS, path)
    return frame


def _epoch_seconds(values: pd.Series) -> pd.Series:
    """Invoice times (naive, UK local) as epoch seconds; unparseable -> NaN."""
    when = values if pd.api.types.is_datetime64_any_dtype(values) else pd.to_datetime(values, errors="coerce")
    if getattr(when.dt, "tz", None) is not None:
        when = when.dt.tz_convert("UTC").dt.tz_localize(None)
    seconds = (when - pd.Timestamp(0)) // pd.Timedelta(seconds=1)
    return seconds.astype("float64")


def clean_purchases(frame: pd.DataFrame, report: SourceReport) -> pd.DataFrame:
    """The README's clean purchases: Quantity>0, UnitPrice>0, CustomerID present, not a "C" invoice.

    Each dropped line is counted under the first rule it breaks, so the filtered counts add up.
    Bad values (a non-numeric or infinite quantity or price, an unreadable date) are bad rows, not filtered ones.
    Adds columns quantity, price, timestamp, user_id, item_id, title.
    """
    quantity = pd.to_numeric(frame["Quantity"], errors="coerce")
    price = pd.to_numeric(frame["UnitPrice"], errors="coerce")
    stamp = _epoch_seconds(frame["InvoiceDate"])
    code = frame["StockCode"].astype("string").str.strip()
    malformed = ~np.isfinite(quantity.astype(float)) | ~np.isfinite(price.astype(float))  # NaN, words, inf
    malformed |= stamp.isna() | code.isna() | code.eq("")
    malformed |= nul_ids(frame["StockCode"]) | nul_ids(frame["CustomerID"])  # an id with a NUL byte: a bad row
    malformed |= not_single_ids(frame["StockCode"]) | not_single_ids(frame["CustomerID"])
    if malformed.any():
        report.bad("malformed row", f"row {int(np.flatnonzero(malformed)[0]) + 1}", int(malformed.sum()))
    invoice = frame["InvoiceNo"].astype("string").str.strip().fillna("")
    rules = [
        ("cancelled invoice", invoice.str.upper().str.startswith("C")),
        ("missing CustomerID", frame["CustomerID"].isna()),
        ("non-positive quantity", quantity <= 0),
        ("non-positive price", price <= 0),
    ]
    dropped = malformed.to_numpy().copy()
    for reason, rule in rules:
        hit = rule.fillna(False).to_numpy(dtype=bool) & ~dropped
        report.filter(reason, int(hit.sum()))
        dropped |= hit
    keep = ~dropped
    clean = pd.DataFrame(
        {
            "user_id": id_column(frame.loc[keep, "CustomerID"]).to_numpy(),
            "item_id": code[keep].astype(object).to_numpy(),
            "quantity": quantity[keep].astype(float).to_numpy(),
            "price": price[keep].astype(float).to_numpy(),
            "timestamp": stamp[keep].astype("int64").to_numpy(),
            "title": frame.loc[keep, "Description"].astype("string").str.strip().fillna("").to_numpy(dtype=object),
        }
    )
    report.counts.update(
        clean_lines=len(clean), clean_customers=clean["user_id"].nunique(), clean_items=clean["item_id"].nunique()
    )
    report.notes.append(
        f"clean purchases: {len(clean)} lines, {report.counts['clean_customers']} customers, "
        f"{report.counts['clean_items']} stock codes (before dropping non-product codes)"
    )
    return clean


def _titles(lines: pd.DataFrame) -> pd.Series:
    """Most frequent non-empty description per stock code (ties: alphabetical), "" when none."""
    named = lines.loc[lines["title"] != ""]
    counts = named.groupby(["item_id", "title"]).size().rename("n").reset_index()
    counts = counts.sort_values(["item_id", "n", "title"], ascending=[True, False, True], kind="stable")
    return counts.drop_duplicates("item_id").set_index("item_id")["title"]


def read_online_retail(path: Path | str, max_bad_fraction: float = 0.05) -> Dataset:
    """Online Retail as implicit feedback: rating = total quantity a customer bought of a product."""
    path = Path(path)
    report = SourceReport(source=str(path))
    frame = _load(path)
    report.rows_read = len(frame)
    lines = clean_purchases(frame, report)
    report.check(max_bad_fraction)
    non_product = lines["item_id"].map(is_non_product).to_numpy(dtype=bool)
    report.filter("non-product stock code", int(non_product.sum()))
    lines = lines.loc[~non_product]
    pairs = lines.groupby(["user_id", "item_id"], sort=False).agg(
        rating=("quantity", "sum"), timestamp=("timestamp", "max")
    )
    pairs = pairs.reset_index()
    interactions = interactions_frame(pairs["user_id"], pairs["item_id"], pairs["rating"], pairs["timestamp"])
    report.notes.append(f"{len(lines)} product lines merged into {len(interactions)} customer x product pairs")
    per_item = lines.groupby("item_id", sort=True).agg(price=("price", "median"), quantity=("quantity", "median"))
    items = pd.DataFrame(
        {
            "item_id": per_item.index.astype(object),
            "title": _titles(lines).reindex(per_item.index).fillna("").to_numpy(dtype=object),
            "price": per_item["price"].astype(float).to_numpy(),
            "quantity": per_item["quantity"].astype(float).to_numpy(),
        }
    )
    return Dataset(
        name=dataset_name(path),
        interactions=interactions,
        items=items,
        users=_users(frame, lines),
        item_schema=FeatureSchema(title="title", numeric=["price", "quantity"]),
        user_schema=FeatureSchema(title=None, categorical=["country"]),
        feedback="implicit",
        rating_range=None,
        reports=[report],
    )


def _users(frame: pd.DataFrame, lines: pd.DataFrame) -> pd.DataFrame:
    """One row per purchasing customer with their most frequent country (a categorical user feature)."""
    users = pd.unique(lines["user_id"])
    if "Country" not in frame.columns:
        return pd.DataFrame({"user_id": users, "country": [""] * len(users)})
    known = frame.loc[frame["CustomerID"].notna(), ["CustomerID", "Country"]]
    ids = id_column(known["CustomerID"])
    country = known["Country"].astype("string").str.strip().fillna("")
    top = pd.DataFrame({"user_id": ids.to_numpy(), "country": country.to_numpy(dtype=object)})
    top = top.groupby(["user_id", "country"]).size().rename("n").reset_index()
    top = top.sort_values(["user_id", "n", "country"], ascending=[True, False, True]).drop_duplicates("user_id")
    by_user = dict(zip(top["user_id"], top["country"], strict=True))
    return pd.DataFrame({"user_id": users.astype(object), "country": [by_user.get(u, "") for u in users]})
