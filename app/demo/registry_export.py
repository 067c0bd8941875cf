"""A synthetic poor-household registry export in the layout of the Chinese national system (CSV).

For trying ``tpa import households`` with ``examples/mappings/households-zh.yaml``, for the import tests and
for the import benchmark. Every value is invented from a seed: the names are numbered labels (户主0000001) and
the ID numbers are random digits (not valid resident ID numbers of anyone).
"""

from __future__ import annotations

import csv
import random
from collections.abc import Sequence
from pathlib import Path

COLUMNS = (
    "户主姓名", "户主身份证号", "行政村代码", "识别标准", "贫困户属性", "主要致贫原因", "其他致贫原因", "贫困户状态",
    "识别年度", "脱贫年度", "家庭人口数", "工资性收入", "生产经营性收入", "财产性收入", "转移性收入", "生产经营性支出",
    "人均纯收入", "住房安全等级", "饮水安全", "厕所类型", "耕地面积（亩）", "加入合作社",
)
CAUSES = ("因病", "因残", "因学", "因灾", "缺土地", "缺水", "缺技术", "缺劳力", "缺资金", "交通条件落后",
          "自身发展动力不足", "其它")
CAUSE_WEIGHTS = (42, 14, 6, 3, 4, 2, 9, 8, 7, 2, 2, 1)


def id_number(rng: random.Random) -> str:
    """18 characters shaped like a resident ID number (random, not a real one)."""
    body = "".join(rng.choice("0123456789") for _ in range(17))
    return body + rng.choice("0123456789X")


def registry_rows(n: int, villages: Sequence[str], seed: int = 7) -> list[list[str]]:
    return list(iter_registry_rows(n, villages, seed))


def iter_registry_rows(n: int, villages: Sequence[str], seed: int = 7):  # noqa: ANN201 (generator)
    rng = random.Random(seed)
    for i in range(n):
        main = rng.choices(CAUSES, CAUSE_WEIGHTS)[0]
        others = rng.sample([c for c in CAUSES if c != main], rng.choice((0, 0, 1, 2)))
        status = rng.choices(("未脱贫", "已脱贫", "返贫", "监测户"), (25, 70, 2, 3))[0]
        identified = rng.randint(2014, 2016)
        exited = str(rng.randint(identified, 2019)) if status == "已脱贫" else ""
        size = rng.choices(range(1, 9), (18, 30, 20, 15, 9, 5, 2, 1))[0]
        wage = round(rng.uniform(0, 12000), 2)
        business = round(rng.uniform(0, 6000), 2)
        prop = round(rng.uniform(0, 800), 2)
        transfer = round(rng.uniform(500, 5000), 2)
        expense = round(rng.uniform(0, min(3000, business + 1)), 2)
        net_pc = round((wage + business + prop + transfer - expense) / size, 2)
        arable = round(rng.uniform(0, 20), 1)
        yield [
            f"户主{i:07d}", id_number(rng), rng.choice(villages), "国家标准",
            rng.choices(("一般贫困户", "低保贫困户", "五保贫困户"), (70, 25, 5))[0], main, "、".join(others), status,
            str(identified), exited, str(size), f"{wage:.2f}", f"{business:.2f}", f"{prop:.2f}", f"{transfer:.2f}",
            f"{expense:.2f}", f"{net_pc:.2f}", rng.choice(("A级", "B级", "B级", "C级", "D级")),
            rng.choice(("是", "是", "是", "否")), rng.choice(("水冲式", "旱厕", "旱厕", "无")), f"{arable:.1f}",
            rng.choice(("是", "否")),
        ]


def write_registry_csv(path: Path, n: int, villages: Sequence[str], seed: int = 7, encoding: str = "utf-8") -> Path:
    with Path(path).open("w", newline="", encoding=encoding) as fh:
        w = csv.writer(fh)
        w.writerow(COLUMNS)
        w.writerows(iter_registry_rows(n, villages, seed))
    return Path(path)
