"""A user's own single-label file, made from ../shared/data: AllSides headlines and descriptions, topic in 4 groups.

The 6,000 articles of allsides_media_train_6k.csv.gz, each as `headline` (its title), `description`
(its first paragraph, at most 60 words) and `group`: its AllSides topic mapped to politics, world,
economy or society. Written outside the project (data is never copied into it):

    .venv/bin/python research/own_labels/allsides_headlines.py /tmp/allsides_headlines.csv
    pipeline init /tmp/allsides_headlines.csv --task news_groups --text-column headline,description --label-column group
    pipeline train -c configs/news_groups.yaml && pipeline evaluate -c configs/news_groups.yaml
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

SOURCE = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "allsides_media_train_6k.csv.gz"
GROUPS = {
    "politics": "elections politics white_house us_senate us_house us_congress republican_party democratic_party "
    "impeachment polarization campaign_finance campaign_rhetoric tea_party voting_rights_and_voter_fraud "
    "supreme_court justice_department fbi media_bias fake_news facts_and_fact_checking bridging_divides "
    "us_constitution role_of_government domestic_policy",
    "world": "world foreign_policy middle_east north_korea russia state_department israel asia china europe mexico "
    "great_britain palestine africa south_korea terrorism isis national_security us_military defense "
    "national_defense nsa cia homeland_security nuclear_weapons",
    "economy": "economy_and_jobs federal_budget taxes banking_and_finance trade fiscal_cliff labor economic_policy "
    "treasury energy business inequality social_security welfare housing_and_homelessness agriculture "
    "transportation technology cybersecurity",
}  # every other topic (healthcare, immigration, guns, education, ...) is `society`


def main(out: Path) -> None:
    df = pd.read_csv(SOURCE)
    group_of = {topic: group for group, topics in GROUPS.items() for topic in topics.split()}
    first_paragraph = df["content_original"].fillna("").str.strip().str.split("\n").str[0]
    table = pd.DataFrame(
        {
            "id": df["ID"],
            "headline": df["title"].fillna("").str.strip(),
            "description": first_paragraph.str.split().str[:60].str.join(" "),
            "group": df["topic"].map(group_of).fillna("society"),
        }
    )
    table.to_csv(out, index=False)
    print(f"{out}: {len(table)} rows; {table['group'].value_counts().to_dict()}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("/tmp/allsides_headlines.csv"))
