"""Reference data of the generated store OLTP system: customers, products, stores and their daily changes.

Internal to :mod:`retail_lakehouse.sandbox.generate`. State lives in plain lists / numpy arrays so that a day's
changes (a few rows) are cheap and replaying days in order always gives the same state.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

DAY = 86_400

FIRST_NAMES = (
    "James", "Mary", "Robert", "Patricia", "John", "Jennifer", "Michael", "Linda", "David", "Elizabeth",
    "William", "Barbara", "Richard", "Susan", "Joseph", "Jessica", "Thomas", "Sarah", "Carlos", "Karen",
    "Daniel", "Lisa", "Matthew", "Nancy", "Anthony", "Betty", "Mark", "Sandra", "Wei", "Ashley",
    "Steven", "Kimberly", "Andrew", "Emily", "Kenji", "Donna", "Omar", "Michelle", "Luis", "Aisha",
)  # fmt: skip
LAST_NAMES = (
    "Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis", "Rodriguez", "Martinez",
    "Hernandez", "Lopez", "Gonzalez", "Wilson", "Anderson", "Thomas", "Taylor", "Moore", "Jackson", "Martin",
    "Lee", "Perez", "Thompson", "White", "Harris", "Sanchez", "Clark", "Ramirez", "Lewis", "Robinson",
    "Walker", "Young", "Allen", "King", "Wright", "Scott", "Nguyen", "Hill", "Flores", "Green",
)  # fmt: skip
STREETS = (
    "Main", "Oak", "Pine", "Maple", "Cedar", "Elm", "Washington", "Lake", "Hill", "Park",
    "Walnut", "Sunset", "Lincoln", "Jackson", "River", "Highland", "Church", "Spring", "Forest", "Mill",
)  # fmt: skip
STREET_SUFFIXES = ("St", "Ave", "Blvd", "Rd", "Ln", "Dr", "Ct", "Way")
# (city, state, postal prefix, region)
CITIES = (
    ("New York", "NY", "100", "Northeast"), ("Boston", "MA", "021", "Northeast"),
    ("Philadelphia", "PA", "191", "Northeast"), ("Pittsburgh", "PA", "152", "Northeast"),
    ("Newark", "NJ", "071", "Northeast"), ("Chicago", "IL", "606", "Midwest"),
    ("Detroit", "MI", "482", "Midwest"), ("Minneapolis", "MN", "554", "Midwest"),
    ("Columbus", "OH", "432", "Midwest"), ("Milwaukee", "WI", "532", "Midwest"),
    ("Kansas City", "MO", "641", "Midwest"), ("Atlanta", "GA", "303", "South"),
    ("Miami", "FL", "331", "South"), ("Orlando", "FL", "328", "South"), ("Houston", "TX", "770", "South"),
    ("Dallas", "TX", "752", "South"), ("Austin", "TX", "787", "South"), ("Nashville", "TN", "372", "South"),
    ("Charlotte", "NC", "282", "South"), ("New Orleans", "LA", "701", "South"),
    ("Los Angeles", "CA", "900", "West"), ("San Francisco", "CA", "941", "West"),
    ("San Diego", "CA", "921", "West"), ("Seattle", "WA", "981", "West"), ("Portland", "OR", "972", "West"),
    ("Denver", "CO", "802", "West"), ("Phoenix", "AZ", "850", "West"), ("Las Vegas", "NV", "891", "West"),
    ("Salt Lake City", "UT", "841", "West"), ("Albuquerque", "NM", "871", "West"),
)  # fmt: skip
SEGMENTS = ("regular", "premium", "vip", "employee")
SEGMENT_P = (0.70, 0.20, 0.07, 0.03)
# category -> subcategories
CATEGORIES = {
    "Grocery": ("Snacks", "Beverages", "Pantry", "Dairy", "Frozen"),
    "Home": ("Kitchen", "Bedding", "Decor", "Cleaning"),
    "Electronics": ("Audio", "Phones", "Computers", "Accessories"),
    "Apparel": ("Men", "Women", "Kids", "Shoes"),
    "Beauty": ("Skincare", "Haircare", "Makeup"),
    "Toys": ("Games", "Puzzles", "Outdoor"),
    "Sports": ("Fitness", "Camping", "Cycling"),
}
BRANDS = (
    "Acme", "Northwind", "Contoso", "Fabrikam", "Globex", "Initech", "Umbrella", "Stark", "Wayne", "Tyrell",
    "Soylent", "Hooli", "Vandelay", "Wonka", "Gringotts", "Oceanic", "Duff", "Monarch", "Cyberdyne", "Aperture",
)  # fmt: skip
ADJECTIVES = ("Classic", "Premium", "Eco", "Ultra", "Basic", "Deluxe", "Compact", "Pro", "Max", "Lite")
STORE_TYPES = ("flagship", "standard", "standard", "outlet", "express")

SUBCATS = tuple((cat, sub) for cat, subs in CATEGORIES.items() for sub in subs)


def epoch_texts(epochs: np.ndarray | list[int]) -> list[str]:
    """Epoch seconds -> 'YYYY-MM-DD HH:MM:SS' strings."""
    arr = np.asarray(epochs, dtype="int64").astype("datetime64[s]")
    return [s.replace("T", " ") for s in np.datetime_as_string(arr).tolist()]


def _addresses(rng: np.random.Generator, n: int) -> tuple[list[str], list[int], list[str]]:
    """Draw n addresses: (street address, city index, postal code). Always draws the same amount."""
    house = rng.integers(1, 10_000, n).tolist()
    street = rng.integers(0, len(STREETS), n).tolist()
    suffix = rng.integers(0, len(STREET_SUFFIXES), n).tolist()
    city = rng.integers(0, len(CITIES), n).tolist()
    zip_tail = rng.integers(0, 100, n).tolist()
    address = [
        f"{h} {STREETS[s]} {STREET_SUFFIXES[x]}" for h, s, x in zip(house, street, suffix, strict=True)
    ]
    postal = [f"{CITIES[c][2]}{z:02d}" for c, z in zip(city, zip_tail, strict=True)]
    return address, city, postal


@dataclass
class Customers:
    """Current state of the customers table, one entry per customer_id (id = index + 1)."""

    first_name: list[str] = field(default_factory=list)
    last_name: list[str] = field(default_factory=list)
    email: list[str] = field(default_factory=list)
    phone: list[str] = field(default_factory=list)
    address: list[str] = field(default_factory=list)
    city: list[int] = field(default_factory=list)
    postal_code: list[str] = field(default_factory=list)
    segment: list[int] = field(default_factory=list)
    created_at: list[int] = field(default_factory=list)
    updated_at: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.first_name)

    def add(self, rng: np.random.Generator, created: np.ndarray, updated: np.ndarray) -> None:
        """Append len(created) new customers with attributes drawn from rng."""
        n = len(created)
        first_id = len(self) + 1
        fi = rng.integers(0, len(FIRST_NAMES), n).tolist()
        li = rng.integers(0, len(LAST_NAMES), n).tolist()
        phone = rng.integers(0, 10_000_000, n).tolist()
        segment = rng.choice(len(SEGMENTS), n, p=SEGMENT_P).tolist()
        address, city, postal = _addresses(rng, n)
        first = [FIRST_NAMES[i] for i in fi]
        last = [LAST_NAMES[i] for i in li]
        self.first_name += first
        self.last_name += last
        self.email += [
            f"{f.lower()}.{la.lower()}{first_id + k}@example.com"
            for k, (f, la) in enumerate(zip(first, last, strict=True))
        ]
        self.phone += [f"555-{p // 10_000:03d}-{p % 10_000:04d}" for p in phone]
        self.address += address
        self.city += city
        self.postal_code += postal
        self.segment += segment
        self.created_at += np.asarray(created, dtype="int64").tolist()
        self.updated_at += np.asarray(updated, dtype="int64").tolist()

    def row(self, i: int, created: str | None = None, updated: str | None = None) -> tuple:
        """The table row of customer index i (customer_id = i + 1)."""
        city = CITIES[self.city[i]]
        return (
            i + 1, self.first_name[i], self.last_name[i], self.email[i], self.phone[i], self.address[i],
            city[0], city[1], self.postal_code[i], SEGMENTS[self.segment[i]],
            created or epoch_texts([self.created_at[i]])[0], updated or epoch_texts([self.updated_at[i]])[0],
        )  # fmt: skip

    def rows(self) -> list[tuple]:
        """All rows (timestamps formatted in one vectorised pass)."""
        created, updated = epoch_texts(self.created_at), epoch_texts(self.updated_at)
        return [self.row(i, created[i], updated[i]) for i in range(len(self))]


def base_customers(rng: np.random.Generator, n: int, start: int) -> Customers:
    """Customers existing before the first day: created up to 3 years earlier, last updated before start."""
    created = start - rng.integers(DAY, 3 * 365 * DAY, n)
    updated = created + (rng.random(n) * (start - 1 - created)).astype("int64")
    customers = Customers()
    customers.add(rng, created, updated)
    return customers


def new_customers(rng: np.random.Generator, customers: Customers, mean: float, day_start: int) -> list[int]:
    """Sign up a Poisson(mean) number of customers during the day; returns their indexes."""
    n = int(rng.poisson(mean))
    created = day_start + np.sort(rng.integers(0, DAY, n))
    first = len(customers)
    customers.add(rng, created, created)
    return list(range(first, first + n))


def change_customers(
    rng: np.random.Generator, customers: Customers, rate: float, day_start: int
) -> list[int]:
    """Move (address) or re-segment a share `rate` of the customers in place; returns changed indexes.

    The draws do not depend on `rate`, so the same seed gives the same customers whatever the rates.
    """
    n = len(customers)
    pick = rng.random(n)
    is_move = rng.random(n) < 0.5
    seg_step = rng.integers(1, len(SEGMENTS), n)
    when = rng.integers(0, DAY, n)
    address, city, postal = _addresses(rng, n)
    changed = np.flatnonzero(pick < rate).tolist()
    for i in changed:
        if is_move[i]:
            customers.address[i], customers.city[i], customers.postal_code[i] = address[i], city[i], postal[i]
        else:
            customers.segment[i] = (customers.segment[i] + int(seg_step[i])) % len(SEGMENTS)
        customers.updated_at[i] = max(customers.updated_at[i] + 1, day_start + int(when[i]))
    return changed


@dataclass
class Products:
    """Current state of the products table (product_id = index + 1)."""

    rows_static: list[tuple]  # sku, product_name, category, subcategory, brand
    unit_price: np.ndarray
    unit_cost: np.ndarray
    is_active: np.ndarray
    created_at: np.ndarray
    updated_at: np.ndarray
    popularity: np.ndarray  # order-line probability over active products

    @property
    def active_ids(self) -> np.ndarray:
        return np.flatnonzero(self.is_active) + 1

    def rows(self) -> list[tuple]:
        created, updated = epoch_texts(self.created_at), epoch_texts(self.updated_at)
        price, cost, active = self.unit_price.tolist(), self.unit_cost.tolist(), self.is_active.tolist()
        return [
            (i + 1, *s, price[i], cost[i], active[i], created[i], updated[i])
            for i, s in enumerate(self.rows_static)
        ]


def base_products(rng: np.random.Generator, n: int, start: int) -> Products:
    sub = rng.integers(0, len(SUBCATS), n).tolist()
    brand = rng.integers(0, len(BRANDS), n).tolist()
    adj = rng.integers(0, len(ADJECTIVES), n).tolist()
    price = np.clip(np.round(rng.lognormal(3.0, 0.8, n), 2), 0.99, 2_000.0)
    cost = np.round(price * rng.uniform(0.35, 0.75, n), 2)
    is_active = (rng.random(n) < 0.95).astype("int64")
    is_active[0] = 1  # at least one product can be sold
    created = start - rng.integers(30 * DAY, 5 * 365 * DAY, n)
    updated = created + (rng.random(n) * (start - 1 - created)).astype("int64")
    weight = rng.pareto(1.5, n) + 1.0
    static = [
        (
            f"SKU-{i + 1:06d}",
            f"{BRANDS[brand[i]]} {ADJECTIVES[adj[i]]} {SUBCATS[sub[i]][1]} {i + 1}",
            SUBCATS[sub[i]][0],
            SUBCATS[sub[i]][1],
            BRANDS[brand[i]],
        )
        for i in range(n)
    ]
    active_w = weight[is_active == 1]
    return Products(static, price, cost, is_active, created, updated, active_w / active_w.sum())


def change_prices(rng: np.random.Generator, products: Products, rate: float, day_start: int) -> list[int]:
    """Reprice a share `rate` of the products (x0.85..x1.20) in place; returns changed indexes."""
    n = len(products.rows_static)
    pick = rng.random(n)
    factor = rng.uniform(0.85, 1.20, n)
    when = rng.integers(0, DAY, n)
    changed = np.flatnonzero(pick < rate)
    new = np.maximum(np.round(products.unit_price[changed] * factor[changed], 2), 0.99)
    products.unit_price[changed] = new
    products.updated_at[changed] = np.maximum(products.updated_at[changed] + 1, day_start + when[changed])
    return changed.tolist()


def base_stores(rng: np.random.Generator, n: int, start: int) -> list[tuple]:
    city = rng.integers(0, len(CITIES), n).tolist()
    stype = rng.integers(0, len(STORE_TYPES), n).tolist()
    opened = start - rng.integers(365 * DAY, 20 * 365 * DAY, n)
    updated = opened + (rng.random(n) * (start - 1 - opened)).astype("int64")
    opened_date = [s[:10] for s in epoch_texts(opened)]
    updated_s = epoch_texts(updated)
    rows = []
    for i in range(n):
        c = CITIES[city[i]]
        kind = STORE_TYPES[stype[i]]
        rows.append(
            (i + 1, f"S{i + 1:04d}", f"{c[0]} {kind.title()} #{i + 1}", c[0], c[1], c[3], kind,
             opened_date[i], updated_s[i])
        )  # fmt: skip
    return rows
