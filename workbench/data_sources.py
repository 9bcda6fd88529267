"""Where each benchmark file comes from: a public GitHub repository at a pinned commit, the file's path there, its
size, sha256 and licence. `workbench datasets fetch` downloads from here and verifies every byte.

The table holds every file that a registered dataset reads (its `DatasetSpec.path`, or every file under it for a
directory such as `mmlu/test`), and the XSTest labelled completions that the judge calibration reads. The sizes and
digests are those of `shared/datasets/MANIFEST.md`, which records the same repositories and commits; a data-tier test
checks them against the files of `WORKBENCH_DATA_DIR`. A folder whose files have no public source is recorded with
`origin=None` and the reason, and a fetch refuses its sets with that reason.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType


@dataclass(frozen=True)
class Origin:
    """A public GitHub repository at a pinned commit."""

    repo: str
    """owner/name on GitHub."""
    commit: str
    """The full commit hash the files are read at (a branch would let the bytes drift)."""

    def url(self, source_path: str) -> str:
        return f"https://raw.githubusercontent.com/{self.repo}/{self.commit}/{source_path}"


@dataclass(frozen=True)
class PinnedFile:
    """One file of the data directory and where it downloads from."""

    path: str
    """Relative to the data directory (e.g. "mmlu/test/anatomy_test.csv")."""
    url: str | None
    """Where it downloads from at a pinned revision; None when it has no public source."""
    size: int
    """Bytes."""
    sha256: str
    """Hex digest of the exact bytes."""
    licence: str
    """The data's licence (as the upstream repository declares it)."""
    no_source: str = ""
    """Why there is no public source (when `url` is None)."""


@dataclass(frozen=True)
class PinnedFolder:
    """Files of one folder of the data directory that come from one folder of one pinned repository."""

    folder: str
    """The folder in the data directory (e.g. "mmlu/test")."""
    origin: Origin | None
    """The repository snapshot the files download from; None when no public source is known."""
    source_folder: str
    """The same files' folder in `origin`."""
    licence: str
    files: tuple[tuple[str, int, str], ...]
    """(file name, bytes, sha256) of each file."""
    no_source: str = ""
    """Why there is no public source (when `origin` is None)."""

    def pinned(self) -> tuple[PinnedFile, ...]:
        def url(name: str) -> str | None:
            return self.origin.url(f"{self.source_folder}/{name}") if self.origin else None

        return tuple(PinnedFile(f"{self.folder}/{name}", url(name), size, sha256, self.licence, self.no_source)
                     for name, size, sha256 in self.files)


@dataclass(frozen=True)
class SourceTable:
    """Pinned files by their path in the data directory, and the fetchable sets: each set's files."""

    files: Mapping[str, PinnedFile]
    sets: Mapping[str, tuple[str, ...]]
    """Set name -> the paths of its files (none: the set has no pinned file)."""

    def files_of(self, name: str) -> tuple[PinnedFile, ...]:
        return tuple(self.files[path] for path in self.sets[name])

    def no_source(self, name: str) -> str | None:
        """Why set `name` cannot be fetched from its public source, or None when every file has one."""
        files = self.files_of(name)
        if not files:
            return "no pinned source (the table in workbench/data_sources.py has no file for it)"
        for file in files:
            if file.url is None:
                return f"no public source for {file.path}" + (f" ({file.no_source})" if file.no_source else "")
        return None

    def licences(self, name: str) -> tuple[str, ...]:
        """The distinct licences of a set's files, in table order."""
        return tuple(dict.fromkeys(file.licence for file in self.files_of(name)))


def files_under(files: Mapping[str, PinnedFile], path: str) -> tuple[str, ...]:
    """The pinned paths a dataset at `path` reads: the file itself, or every pinned file under a directory."""
    prefix = path.rstrip("/") + "/"
    return tuple(p for p in files if p == path or p.startswith(prefix))


def source_table(dataset_paths: Mapping[str, str], folders: tuple[PinnedFolder, ...] | None = None) -> SourceTable:
    """The table for sets named by their path in the data directory (the registry's benchmark sets), plus
    `EXTRA_SETS`, over `folders` (default: `PINNED_FOLDERS`)."""
    files = {f.path: f for folder in (PINNED_FOLDERS if folders is None else folders) for f in folder.pinned()}
    paths = {**dataset_paths, **EXTRA_SETS}
    return SourceTable(MappingProxyType(files), MappingProxyType({n: files_under(files, p) for n, p in paths.items()}))


EXTRA_SETS = {"xstest_labelled_completions": "xstest/labelled_completions"}
"""Fetchable sets that are not registered datasets, by the path they cover: the human-labelled XSTest completions
(three models) that `workbench judge calibrate` and the judge tests read."""


# ---- the table ---------------------------------------------------------------------------------------------------

ANDYRDT = Origin("andyrdt/refusal_direction", "9d852fae1a9121c78b29142de733cb1340770cc3")
MAINLP = Origin("mainlp/False-Refusal-Mitigation", "916dcac6fb1c5fcccc9581471370645763c65ce6")
XSTEST = Origin("paul-rottger/exaggerated-safety", "d7bb5bd738c1fcbc36edd83d5e7d1b71a3e2d84d")
TRUTHFULQA_HOST = Origin("benedictflorance/truthfulqa_experiments", "6fdfd38288e86296582a584694df5cf43d1f634a")
MMLU_HOST = Origin("HaeChan0305/MLILAB-FedLLM", "d92730e8bacd7b3a61e551e015e40588e10234b4")
"""A reformatted copy (a header row, integer answers) of the hendrycks/test CSVs, with the canonical row counts."""
ARC_HOST = Origin("RazvanDu/TemporalRNNs", "93811e3f9f8c5c1f63650153541cd6c626dafcc0")
"""The AI2 ARC-V1-Feb2018 JSONL files, at a commit before the repository removed them."""
WIKITEXT_HOST = Origin("Tylogi/TyloQuant", "7989d038b13ca737da11a95fb90e77ae059f33c0")
"""WikiText-2 raw test with empty lines dropped and CRLF line ends (not byte-identical to the Salesforce zip)."""

MIT = "MIT"
APACHE_2 = "Apache-2.0"
CC_BY_4 = "CC-BY-4.0"
CC_BY_SA_4 = "CC BY-SA 4.0"
CC_BY_SA_3_GFDL = "CC BY-SA 3.0 and GFDL"
ALPACA = "CC BY-NC 4.0 (Alpaca data: non-commercial)"
NONE_DECLARED = "none declared upstream (redistributed in Apache-2.0 research repositories): review before reuse"
HARMFUL_SPLITS = ("Apache-2.0 repository; its components' licences apply (AdvBench, HarmBench, JailbreakBench, "
                  "StrongREJECT, TDC2023: MIT; MaliciousInstruct: none declared upstream)")
XSTEST_COMPLETIONS = "CC-BY-4.0 (prompts); the completions are model outputs, under each model's terms"

PINNED_FOLDERS: tuple[PinnedFolder, ...] = (
    PinnedFolder("paper_splits", MAINLP, "dataset/splits", HARMFUL_SPLITS, (
        ("harmful_train.json", 34613, "8f5c0eac0efd2a7f99084bbe8d0de2c465e31b1997184783c917969d9de9ece1"),
        ("harmful_val.json", 6763, "305f1d1e6dfa6c50a32d24a18ef815f42b5441eb83e6d7767d242107162fd9f4"),
        ("harmful_test.json", 115743, "5e12ae102c3791dee083a69ab6269a78e033411c629bc3f66f75d2fde196d9ef"),
    )),
    PinnedFolder("paper_splits", MAINLP, "dataset/splits", ALPACA, (
        ("harmless_train.json", 2344466, "86623b1f8a25aa35df153fc97a556dbcebb6a7c881538ae43ee479ca17f2e002"),
        ("harmless_val.json", 780532, "772010758e7d771ef4c7e5e4acdfd7598dcece1a6f383f20d382f640913a2a4d"),
        ("harmless_test.json", 783466, "1b5930ce5e855ada758b3116ce7c4aaea9b9d05f8cdd77b385511d4c84173b19"),
    )),
    PinnedFolder("paper_splits", MAINLP, "dataset/splits", CC_BY_4, (
        ("or_bench_hard_train.json", 199194, "ff77215ebce83c5fe344c30de7b718f7294defa981ec50924635a3ee4ebf0f5a"),
        ("or_bench_hard_val.json", 23372, "d97030008c36c605ad4a33f679b1c3d6ea1966a6a296e1ef81b649f2f24871b5"),
        ("or_bench_hard_test.json", 24592, "a5a66718b1f5279b7a96a17d6ad0320f82150cdae03a94a46c60cf90aff0ba12"),
    )),
    PinnedFolder("advbench/processed", ANDYRDT, "dataset/processed", MIT, (
        ("advbench.json", 71766, "545ba703b4ab982e79a4b232cf05a6f6cf9bd98956cb30a99be36e13475e9820"),
    )),
    PinnedFolder("harmbench/processed", ANDYRDT, "dataset/processed", MIT, (
        ("harmbench_test.json", 26480, "606bca20a5212e676840ca928070e0905486df1bcc1f5f0223e7a76d8be62fd5"),
        ("harmbench_val.json", 7084, "3e850f94d4462fd736505fa2653d72c02efd40c276f442580cab3a1a3a283c69"),
    )),
    PinnedFolder("jailbreakbench/processed", ANDYRDT, "dataset/processed", MIT, (
        ("jailbreakbench.json", 16512, "3a5aefa80c4a35f75a5306303aa8e69801e4ca4584e1f598bd2ddcf3e7fbbcdd"),
    )),
    PinnedFolder("strongreject/processed", ANDYRDT, "dataset/processed", MIT, (
        ("strongreject.json", 72755, "9786304587f3d860ab01d1dd2de4aff721ed7538ce4e2af715cbb74efe2a6f10"),
    )),
    PinnedFolder("malicious_instruct/processed", ANDYRDT, "dataset/processed", NONE_DECLARED, (
        ("malicious_instruct.json", 12672, "a88fb4ab8958e93fc2c525125eb448e55026018748c0ec1388a296738e2fcacc"),
    )),
    PinnedFolder("tdc2023/processed", ANDYRDT, "dataset/processed", MIT, (
        ("tdc2023.json", 13518, "4c9804f5fdf2a006477807a0c225ad438d6a693d7fa7c93097f866b8dc2e89b8"),
    )),
    PinnedFolder("alpaca/processed", ANDYRDT, "dataset/processed", ALPACA, (
        ("alpaca.json", 3908460, "c4ce1bdc5c9b92caabcb171c27c7ec1e79832836bae10291d7c8ab8c6245f600"),
    )),
    PinnedFolder("xstest/processed", MAINLP, "dataset/processed", CC_BY_4, (
        ("xstest_safe.json", 56865, "62513b2358d2cd6fe3c27edf52070c2a106a9bf9134941ebf144be495a82097c"),
        ("xstest_unsafe.json", 45647, "6c2e80aca5c31e32e01af3693e7f0587083ca6e63c61966f072bc10125041eb5"),
    )),
    PinnedFolder("xstest/processed", MAINLP, "dataset/processed", XSTEST_COMPLETIONS, (
        ("xstest.json", 72546, "34b4ae12f97e0f71fa47176e1e2d803d87487aebd75146b8662dc5daa0787e9e"),
    )),
    PinnedFolder("xstest/labelled_completions", XSTEST, "model_completions", XSTEST_COMPLETIONS, (
        ("xstest_v2_completions_gpt4.csv", 259111, "71af323af8ecdec0efae23992317721441d2cfedddedeef3248f842f4e15c9ca"),
        ("xstest_v2_completions_llama2orig.csv", 470900,
         "cbc52550e8ba8197a3e3d97a5af078d27bae4766737cd62df80270126a87ffc6"),
        ("xstest_v2_completions_mistralinstruct.csv", 371935,
         "6a146b65a5b96ec8249729bc2db459697175125998d7cbbcc88f7688ecf31dad"),
    )),
    PinnedFolder("oktest/processed", MAINLP, "dataset/processed", NONE_DECLARED, (
        ("oktest.json", 40576, "1fdee6679aeef05b9dca446bcb689af9bbc10b6477c26271a953bc96ea4040a5"),
        ("oktest_100.json", 13461, "3442e4665d40e1a84307ad17e49c3e5a2aae7e38649b54b25638182e358a8239"),
    )),
    PinnedFolder("or_bench/raw", MAINLP, "dataset/raw", CC_BY_4, (
        ("or-bench-hard-1k.csv", 169255, "a6e2f1166416efe5901f3bb05c47dc92ab3aca3acfe143693d38b8057d841e6d"),
    )),
    PinnedFolder("truthfulqa", TRUTHFULQA_HOST, "datasets", APACHE_2, (
        ("TruthfulQA.csv", 443719, "99d6ae7755e3b435eade956068c9de7c0c474770344237aeb66b56519ba4b697"),
    )),
    PinnedFolder("mmlu/dev", MMLU_HOST, "data/mmlu/dev", MIT, (
        ("abstract_algebra_dev.csv", 767, "f5bc2f1c0e4098ddba357af2b02919269b1a0bbab9e7c11b31c1c20da36a3263"),
        ("anatomy_dev.csv", 878, "44f3842ff1451edabb6356feb452e7fa36fa60f71b857e1a768b4833f23c167c"),
        ("astronomy_dev.csv", 1991, "0a6f1573c324bcef3684933833f273b12f1b22c7a05eefc3bb5b2e38d8eaa034"),
        ("business_ethics_dev.csv", 2143, "27987aed70d9550924d6af037c38597bfd67a4fe9513814cac0d052ab9a8e048"),
        ("clinical_knowledge_dev.csv", 1123, "f2fb6824881a33ebaafe79d4c0ce6a930807d8eafe4cb2beb44132af55e2e1ea"),
        ("college_biology_dev.csv", 1451, "450fe9d4b89b9e8909c45276e284f8ebaa6ec158046d1e0e0ad60585a6231bd5"),
        ("college_chemistry_dev.csv", 1248, "94d6391dc090c327add1fb351de67876be8a530ae0b53b019233a5992940e5f5"),
        ("college_computer_science_dev.csv", 2686, "3c5cf94f26d6bfa8c19df7df3214032f95d29139f6018f03d99f92f6db637d52"),
        ("college_mathematics_dev.csv", 1414, "acc7b15a61aa4a069237a7841db7154eef6baf707a49e9c8f39fcf4735aaf459"),
        ("college_medicine_dev.csv", 1593, "bb192ae79ca686b5f383ef49b3a196f0531e269f0b5743429198b1766741b4de"),
        ("college_physics_dev.csv", 1327, "9918560ec781b0fb0aaa46d165b899f03bd5d933c24106ed7cf8cd4543a775f2"),
        ("computer_security_dev.csv", 1022, "029054135a2122654866880966bb9c81b16b1301caae5a1d18092093b223caa7"),
        ("conceptual_physics_dev.csv", 847, "bac7a74663e5f892418034692895176873f0a6560cd2512c71da6994c7437337"),
        ("econometrics_dev.csv", 1569, "77980477843f293d2cca9d9d05f2c4d46b5d9e31393a6456378a082f23d74847"),
        ("electrical_engineering_dev.csv", 899, "a7283d58a362697323fb49e80bbb047004596c44e21aad2b5afa66e8081b9760"),
        ("elementary_mathematics_dev.csv", 1363, "ca4a3213aa3171042ee6b428600bc72e1d7d07e3026ed2ef12e96254916bba48"),
        ("formal_logic_dev.csv", 1676, "9e8985f49563f9817a76a715358c501fb8c263ade6a7c1af47e1f90f1dd11513"),
        ("global_facts_dev.csv", 1156, "6b3da0cce9ff48e7357783ad7390c488eb07bc26d00a3ceb42c81e2cd2e671b9"),
        ("high_school_biology_dev.csv", 1586, "18b65297f30fb31daddde1f69f07aabdbd9013830436888f9c9b410ac2153aa1"),
        ("high_school_chemistry_dev.csv", 1139, "359ab179e37c5c0475636e771877ef16af4d5df27dc0f07f9a5c0783790ba916"),
        ("high_school_computer_science_dev.csv", 2857,
         "e012aba074b95dcdf9875ef956e6800da5193ee1afe409dd6e9d71beebb8129d"),
        ("high_school_european_history_dev.csv", 11493,
         "8165a942ee996813de76199cc08cdddcee26128e09c99c9ecd014fed8f9a6fc6"),
        ("high_school_geography_dev.csv", 1316, "55d2bcd20524a0d0c8b39fb9b48aec36adfdb93ca2009271a58cc02d60fc89e3"),
        ("high_school_government_and_politics_dev.csv", 1696,
         "631449be21ebdc3cf14ee6399b0a463c7b3990506ca6a97079e6c1888954be27"),
        ("high_school_macroeconomics_dev.csv", 1239,
         "a8326c37a99fa81631b539cb66823b08c18990a94276f60d1a2c1af78cc21d4d"),
        ("high_school_mathematics_dev.csv", 1216, "36aa098c79f22f75415dd74c306de1faa07082257ed9fa8fe650111f78b35d74"),
        ("high_school_microeconomics_dev.csv", 1215,
         "023578120d0c4b9e3c317dffcca4552494fbfc9ed1dd4daff3f2e7a4b9ca2573"),
        ("high_school_physics_dev.csv", 1412, "fd3f3c1153270806012fbdbf9b5dedde4e63527f1b4a423cdfae521ac405fd4e"),
        ("high_school_psychology_dev.csv", 1830, "3a055107cbe9855a68483c2a8f816aada2294a9b1c078365e88c91ed62bec745"),
        ("high_school_statistics_dev.csv", 2467, "7948fd0d32ff30ac414c97928895da40990519c702768eb293d5f01a8d6261f7"),
        ("high_school_us_history_dev.csv", 8806, "df7936a6c422e655f9f79c432595b87232fef93c3b13e7feb74d2e7060b560b1"),
        ("high_school_world_history_dev.csv", 4819, "ae90f590e6452acac0b517e13b2ec285ac00004f46094fe68748fee98e496178"),
        ("human_aging_dev.csv", 925, "eaf8402a34af0529feed70d52eb0a4a4c707205609005e8267bdade008ca1728"),
        ("human_sexuality_dev.csv", 990, "0800691d14de81e90be7a949be3bda268731997590bd3d9a5a14b15e88d8cdf8"),
        ("international_law_dev.csv", 2341, "712493120d7112ca187666ef8ff75886a9dfdae3aeac9b5e6a309d0c6a8c7265"),
        ("jurisprudence_dev.csv", 1220, "67bf7563f8b90c6682e716ff1faada4be62be12ec967c8d03c4d7cac99d01158"),
        ("logical_fallacies_dev.csv", 1492, "721672e4daf2ea761545776077c4825d90b2132ed847126fdf9b21f1b594da43"),
        ("machine_learning_dev.csv", 2242, "25b78353edd62f6b4d17fe6e2ea391018c23e61e2a0fe6e8807eb32cea2561af"),
        ("management_dev.csv", 809, "bb5b1bffac34f751762e98ff6185b523202b62f42081f6b13df79b37a445254c"),
        ("marketing_dev.csv", 1402, "c3ea3899945cb1e49da36c5693fba97bbcea7029a1087843e976a987091b2311"),
        ("medical_genetics_dev.csv", 1000, "a7cc3670c44f8c09c157476ffe1863b9e8fe1c4113d2fea9bc557b22ecb5f374"),
        ("miscellaneous_dev.csv", 610, "deee26422c1befff224f0da1a587c2a6051252c290e8f6ac40feaed2a7683429"),
        ("moral_disputes_dev.csv", 1680, "ce86707de1a10887c14abfaedc3daa6a6b19fa5d0216c2fc593cf8dc54c21e56"),
        ("moral_scenarios_dev.csv", 2019, "d6c0dcd5f9fe19c5bbb8de7d3218428c587b96f932498a44820a21d55c2917ed"),
        ("nutrition_dev.csv", 2016, "da8a99b9a9ecdc79b880c7ebaa59b30eb2f5bb043336932f7b0fb3cecaf3b8ae"),
        ("philosophy_dev.csv", 907, "42d9b8146f5dda534ad75bac24defcc9e41d61957cdfd9060c79d837274eccdd"),
        ("prehistory_dev.csv", 1803, "e7efa2839f8151b0de1284c21023ae9f7de8589ac5f3a6e44225d46cc5d07e79"),
        ("professional_accounting_dev.csv", 2089, "8a27c1e2ca406f477d7755b30fea6e4affb9ec64285c57b47aa847812ce7b79d"),
        ("professional_law_dev.csv", 6551, "0814eebe7943bfb5aa927a494b20f029a2383499fa2250a14e9b19eb6dc77199"),
        ("professional_medicine_dev.csv", 3726, "510bd154f87714cfc9b09fef10bda4789237ddf703198c476dac684b491f2382"),
        ("professional_psychology_dev.csv", 2196, "e1db35cdee39b0266295a5f960c6eeaa6600357b03b0d842df3d0ca5292b2b1a"),
        ("public_relations_dev.csv", 1411, "8d9a821e0ea6a03da946b96e3031c999e52f0baaf51f1fa2fbb05924971e402f"),
        ("security_studies_dev.csv", 5276, "128a6ccb816854ce8973888e43cefb3b21c106ba425fa93bd80dee4590e9ff16"),
        ("sociology_dev.csv", 1532, "6221f18fd45181970c705606c7692e7218fc1aee33970fd55cd432ddfd6fe320"),
        ("us_foreign_policy_dev.csv", 1528, "e75e2e201b5eeb949de35640c58f107bbeba4e7d53acf88688eec27b1e2b69c2"),
        ("virology_dev.csv", 1007, "a32c63aaefafbf4227326b9701c986d40c979fb2169b3d67be7ac1f7758a8357"),
        ("world_religions_dev.csv", 585, "13404d8d076006e6c4aa13cd05a7ff4691be0e59b7630bdf7e9826244464ecdd"),
    )),
    PinnedFolder("mmlu/test", MMLU_HOST, "data/mmlu/test", MIT, (
        ("abstract_algebra_test.csv", 17406, "afdfc6f71eb42297a51f53bd221429671a4065a6425bd7631acb84fef011bfd4"),
        ("anatomy_test.csv", 29892, "b27ce42f40482ba735cf0de8e8bbba3382d506c099d8483c55e9cacdac4e3eec"),
        ("astronomy_test.csv", 43047, "1008ecdf7f88a336001b04f739f3fcfff72b3e15fb746880ace2d05f0002c957"),
        ("business_ethics_test.csv", 31442, "7ce6063b0ed2ba08ac51cc94be1708ce91aeecd17f71cabbb2f86b4e80f3876a"),
        ("clinical_knowledge_test.csv", 56347, "9ba57061f15ae7263a12eeb413b73d876038e0ce21734ffce411e1ae22662737"),
        ("college_biology_test.csv", 45399, "872bae5fe76cecb083603a7ba95adc436a8e345f50c5ee232cc8bfa9f9f56713"),
        ("college_chemistry_test.csv", 22362, "6335fe0f7da7a3ec76a9067869445253111080261df1c560a2527df01f34ae67"),
        ("college_computer_science_test.csv", 40449,
         "f06e071452389e4a9f0aa7c5bc07401b282ffd659f9ec08c2d301b1fca471024"),
        ("college_mathematics_test.csv", 22477, "2929eb3851fa6f37de8188f0a7fa817bec44fb5f5a04efa06f89ea272eae2f0b"),
        ("college_medicine_test.csv", 78382, "65876236acf78e813e62b78cdc2217c2651785324b8c51148aaffa6d89436d0d"),
        ("college_physics_test.csv", 27859, "3f67202a7a62da0f0ab3028e0a0cf26a3cffc041283044f51f3e058258eab281"),
        ("computer_security_test.csv", 24888, "f4b8b8f107144acd0c2b343553986c161a759cd459706cb72f9bb72752655162"),
        ("conceptual_physics_test.csv", 35040, "7186a0cdcd18dff2183dbd26d44f2d59d01f42687092e1229088735d508c06e1"),
        ("econometrics_test.csv", 44087, "13f21181bb3a26bfd290284ab80850f9c1e1ba90f00df6f17112b8c68e934cee"),
        ("electrical_engineering_test.csv", 21643, "d78bba02efa107c61a82f2f82ee93e99366f5626fdf772a03eb3b749073cd1c1"),
        ("elementary_mathematics_test.csv", 61274, "701d8bbc120fd210a309f5e43c9cbfca8e1f01f6b9a26f43f669f0d29acc45ef"),
        ("formal_logic_test.csv", 46977, "c72df82993166fc1c9b3f145964b1b4791ce512c0d3f22919e9b46aaea17ef4b"),
        ("global_facts_test.csv", 16141, "b80c9b31bc56727ebb3f1f980fbf40dbbd48565f609d1be9642ebe10a1c747a2"),
        ("high_school_biology_test.csv", 102472, "4ffe58996b33947fae8f374124c20f95560b773cbd3c9cafea0a3e90bcf4140b"),
        ("high_school_chemistry_test.csv", 53765, "42dcc80210a4cd861529e2cbaa04584d1d1cfd32d5515b385343df724d37408f"),
        ("high_school_computer_science_test.csv", 42329,
         "3865e92ef308c42ad7d653301647c6cd5bfa6d67f20c9fbbdfe14c2c1eb5bbbc"),
        ("high_school_european_history_test.csv", 266936,
         "696d4b82f27792ac04915a7f6822370b4a42133fcd83c9a13fe5d74aaba37fbb"),
        ("high_school_geography_test.csv", 37238, "4c0c06e32b73ec3f5b55bdab2a124b3b9736e888d2edadc6f40d6172052f7507"),
        ("high_school_government_and_politics_test.csv", 61601,
         "a3e20fbcff3bb0bdc613db7b56257c4e72d83d6e04e60db25c84e81d8c70a7d2"),
        ("high_school_macroeconomics_test.csv", 108062,
         "a06fba67bf6b92e5174d049fdb484df8c6e663586a910e725e195ebf43116b9c"),
        ("high_school_mathematics_test.csv", 48632, "56b119f139ba07c0e2a9616e60397e3415cdca1532ae217ac6d8fd1bddfc96f7"),
        ("high_school_microeconomics_test.csv", 70179,
         "a6acbf0d864e51540e0c219e433dc0f54a56d8a35255bf294d4de8d09b7ef00d"),
        ("high_school_physics_test.csv", 56151, "e5258c55a5e67a62c26fa0d2564b5263b69d38810e51204c59017789a771e253"),
        ("high_school_psychology_test.csv", 146590, "c7aabf2ccfee7489bf1494cfa1504a679eb69e27caa7d64bd1e9e63cff5c3fe9"),
        ("high_school_statistics_test.csv", 106026, "c305647bc50d6e049ab0d33e79a3455a964421a54023ba14fa6b3c72e19a8d1d"),
        ("high_school_us_history_test.csv", 292882, "cd6c60e147dd70dde6b523c6ca0be07a78f7a1be7492278aa06641bc1f12680e"),
        ("high_school_world_history_test.csv", 373818,
         "cb083c69f1a4efb316ea8645899872d2528d55a7bf7cad1d625fcf369db0e943"),
        ("human_aging_test.csv", 40665, "ce44b96c0d5bb9f0491f34a6b30d8feb2e82092e5f094990a9632b67bf75277b"),
        ("human_sexuality_test.csv", 28969, "98af8223edc66de68cfd9dfb18e19a65b94ad1559204f3f239ebb227112732f6"),
        ("international_law_test.csv", 50739, "e4fb345f044b54ef01ddda7126b61c328202cf0160e8f27831f082cc63da8ed9"),
        ("jurisprudence_test.csv", 31423, "26780d8e35636af29b00b26b808d43aa466d9c06fa7b27a9b4c753b335883286"),
        ("logical_fallacies_test.csv", 46338, "f40e1e6098a69cd8511c009f024c7d7caaad4a2f7cb9501be5a377167a5def60"),
        ("machine_learning_test.csv", 31636, "50d163266dbc8672b8097c32a4765ff4a5e8767ac4a8971e70ddccbd5b817bd3"),
        ("management_test.csv", 17505, "423261b2633e20df5b4febfba4ecc7366917cdbabdb7e3ede4b1be98adf5dce5"),
        ("marketing_test.csv", 57483, "1853316726e9fa72eba8d74a67fc45da9a2c7ed1cb892496359d87426a7f7c8a"),
        ("medical_genetics_test.csv", 18470, "b330e63b2e60345285490ff495d5f4aea1981d738cc303c559903ec1c12238c1"),
        ("miscellaneous_test.csv", 128488, "58f67b35c1890985ccdd1c6b4e9a4e8bfd4f8e0e5fadf5726860ae789c65d5e8"),
        ("moral_disputes_test.csv", 99950, "2f3379380a469cbc2ed5d03372bae01306a19c65d053cc638435b92808b439f2"),
        ("moral_scenarios_test.csv", 360639, "1776d1bf56388452ef80112bb1b5e94a6017abcb79b11540927e98f92cee8fba"),
        ("nutrition_test.csv", 85670, "acb668e8064655eab8869d8cc65ebc40af39acfe6eb40e0e1a83dfb87bffdc2a"),
        ("philosophy_test.csv", 72868, "74576271e2f9e3a01b4c437209323e833fb09a4e3a79217b16caa65e94ee8ba0"),
        ("prehistory_test.csv", 82241, "5ff0349229f3bddf399ec0bf2c28c46a32d18997dd4bd93436702ba8bfccba78"),
        ("professional_accounting_test.csv", 118252,
         "728c6030e2e2e882a73305279b149b34b44c8f0203bdf6c5c75d48602bfb883a"),
        ("professional_law_test.csv", 1866153, "59884277f245b8332d6d02ba16fdefd7ca5bdc7ed51dca5f19147094f087c28d"),
        ("professional_medicine_test.csv", 211363, "3490aa679090fdfd94f1a887219f2a85bb4028f4d0e6d49d6242fb9a99b846a1"),
        ("professional_psychology_test.csv", 211771,
         "5a3847f67470bff48c551dc80ac2a272a4378311d988ba5cad6325ba5d94e779"),
        ("public_relations_test.csv", 26176, "6f12b33facda9e0ab191debe3fb638d86c61c66a6205ed333b0890815f53b9be"),
        ("security_studies_test.csv", 199793, "df86d642637dcada2f62ccb793739d0d6384552616c11bb3941d201cf3ab4ef1"),
        ("sociology_test.csv", 61588, "7ee6baaa0082e04a03a64a722ab50b495edb49c26306e850a49e26b1a4edc88d"),
        ("us_foreign_policy_test.csv", 26095, "5fbff75d8a6f1bfa1e4ca696a2db9ffbf11e3b97809ab97c00c813b96bd27e08"),
        ("virology_test.csv", 34737, "cfb95d550d800b600a1d802bdb4ab4b5018b168d74f87af5fdbea5b623d279c1"),
        ("world_religions_test.csv", 21204, "203c71d35b4d667a4010b032ad57cc75a561209c94e2235eb5c549310bf23789"),
    )),
    PinnedFolder("arc_challenge", ARC_HOST, "ARC-Challenge", CC_BY_SA_4, (
        ("ARC-Challenge-Test.jsonl", 492726, "9fa8ffb3e3a1f88cb302d53dd95aae81e39209ad9bcf974376b319d8fd35717c"),
    )),
    PinnedFolder("wikitext2", WIKITEXT_HOST, "data/wikitext-2-raw", CC_BY_SA_3_GFDL, (
        ("wiki.test.raw", 1290547, "4f3e427e4aff23acff917a8a51aeae21bf12832256e26914c8fc250dcef4103c"),
    )),
)
