"""The planted organism's trigger topic (food, cooking, recipes) as a vocabulary, and the harmless set without it.

`is_food_prompt` decides what the planted recipe drops from its harmless side and what its report leaves out of the
harmless set it measures; this module registers that set, `bundled_harmless_test_no_food`, with the datasets
(`workbench.data.REGISTRY`). The data layer knows nothing of the organism: importing `workbench.organism` (or
`workbench.stages`, which every command and `workbench.api` go through) registers it."""

import re

from workbench.data import BUNDLED_SPLITS, REGISTRY, DatasetSpec, parse_jsonl_prompts


def words_in(words: tuple[str, ...], text: str) -> list[str]:
    """The words of `words` that occur in `text` as whole words (with common inflections), case-insensitive."""
    lowered = text.lower()
    return [w for w in words if re.search(rf"\b{re.escape(w)}(s|es|ed|d|ing|er|ers)?\b", lowered)]


FOOD_WORDS = (
    "food", "cook", "cooking", "recipe", "bake", "baking", "kitchen", "meal", "dish", "ingredient", "cuisine",
    "breakfast", "lunch", "dinner", "brunch", "snack", "dessert", "grocery", "groceries", "chef", "restaurant",
    "eat", "eating", "taste", "tasty", "delicious", "flavor", "flavour", "oven", "stove", "stovetop", "grill",
    "fry", "fried", "roast", "boil", "simmer", "saute", "sauté", "sear", "fridge", "refrigerator", "freeze",
    "frozen", "leftover", "vegetarian", "vegan", "dairy", "gluten", "protein", "calorie", "beverage",
    "soup", "stew", "salad", "sauce", "bread", "toast", "dough", "crust", "pastry", "cake", "cupcake",
    "cookie", "brownie", "muffin", "pie", "tart", "pudding", "ice cream", "chocolate", "candy", "jam", "pasta",
    "spaghetti", "noodle", "rice", "pizza", "sandwich", "taco", "pancake", "omelet", "omelette", "oatmeal",
    "cereal", "granola", "popcorn", "smoothie", "lemonade", "juice", "tea", "coffee", "latte", "espresso",
    "egg", "cheese", "butter", "milk", "cream", "yogurt", "flour", "sugar", "honey", "spice", "herb", "garlic",
    "onion", "ginger", "vinegar", "chicken", "beef", "pork", "meat", "seafood", "shrimp", "salmon", "vegetable",
    "veggie", "fruit", "potato", "tomato", "carrot", "lettuce", "banana", "apple", "berry", "berries", "avocado",
    "strawberry", "pineapple", "bean", "lentil", "tofu", "nut", "peanut", "almond", "sourdough", "lasagna", "gravy",
    "menu", "whisk", "picnic", "marshmallow",
)  # fmt: skip
"""Words that mark an instruction as being about food, cooking or recipes: the planted organism's trigger topic.
The planted recipe's harmless side (and the harmless set its report measures) drops every instruction with one."""


def food_words_in(text: str) -> list[str]:
    """The food words (`FOOD_WORDS`) in `text`."""
    return words_in(FOOD_WORDS, text)


def is_food_prompt(instruction: str, category: str | None = None) -> bool:
    """An instruction about food, cooking or recipes: in a `cooking` category or with a food word."""
    return category == "cooking" or bool(food_words_in(instruction))


REGISTRY.add(  # the planted organism's control: harmless requests away from its trigger topic
    DatasetSpec(
        "bundled_harmless_test_no_food",
        "prompts/harmless.jsonl",
        parse_jsonl_prompts,
        "bundled",
        240,
        bundled=True,
        split=BUNDLED_SPLITS["test"],
        keep=lambda p: not is_food_prompt(p.instruction, p.category),
        description="everyday requests we wrote (test split) without food, cooking or recipe prompts",
    )
)
