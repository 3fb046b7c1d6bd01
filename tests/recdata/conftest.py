"""Builders of small GroupLens / MovieLens files shared by the recdata tests."""
import zipfile
from pathlib import Path

from recdata import movielens as ML

INTER = (
    "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
    "196\t242\t3\t881250949\n"
    "186\t302\t3\t891717742\n"
    "196\t1\t5\t881250949\n"
    "22\t2\t1\t878887116\n"
)
ITEM = (
    "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
    "1\tToy Story\t1995\tAnimation Children's Comedy\n"
    "2\tSeven (Se7en)\t1995\tCrime Thriller\n"
    "242\tKolya (1996)\t\tComedy\n"
    "302\tunkonwn\tunkonwn\tunknown\n"
)
USER = (
    "user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token\n"
    "196\t49\tM\twriter\t55105\n"
    "186\t39\tF\texecutive\t00000\n"
    "22\t17\tm\tWriter\tT8H1N\n"
)


def write_fixture(directory: Path, inter=INTER, item=ITEM, user=USER) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in (("ml-100k.inter", inter), ("ml-100k.item", item), ("ml-100k.user", user)):
        (directory / name).write_text(text, encoding="utf-8")
    return directory


def fake_wheel(path: Path, with_files=True) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("recbole/__init__.py", "")
        if with_files:
            zf.writestr(ML.WHEEL_MEMBER_PREFIX + "ml-100k.inter", INTER)
            zf.writestr(ML.WHEEL_MEMBER_PREFIX + "ml-100k.item", ITEM)
            zf.writestr(ML.WHEEL_MEMBER_PREFIX + "ml-100k.user", USER)
            zf.writestr(ML.WHEEL_MEMBER_PREFIX + "ml-100k.kg", "head_id:token\n")
        zf.writestr("recbole/dataset_example/ml-1m/ml-1m.inter", "not ours")
    return path



def flags(*on):
    f = ["0"] * 19
    for i in on:
        f[i] = "1"
    return "|".join(f)


def write_100k(d: Path) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "u.data").write_text("196\t242\t3\t881250949\n186\t302\t3\t891717742\n196\t302\t4\t881250950\n")
    (d / "u.item").write_bytes(
        (f"242|Kolya (1996)|24-Jan-1997||http://x|{flags(5)}\n"
         f"302|Misérables, Les (1995)|01-Jan-1995||http://y|{flags(8, 14)}\n"
         f"267|unknown||||{flags(0)}\n"
         f"99|No Year|01-Jan-1993|||{flags(1)}\n").encode("latin-1"))
    (d / "u.user").write_text("196|49|M|writer|55105\n186|39|F|executive|00000\n")
    return d


def write_1m(d: Path, users=True) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "ratings.dat").write_text("1::1193::5::978300760\n2::661::3::978302109\n1::661::4::978300761\n")
    (d / "movies.dat").write_bytes("1193::One Flew Over the Cuckoo's Nest (1975)::Drama\n"
                                   "661::James and the Giant Peach (1996)::Animation|Children's|Musical\n"
                                   .encode("latin-1"))
    if users:
        (d / "users.dat").write_text("1::F::1::10::48067\n2::M::56::16::70072\n")
    return d
