"""A CPU-bound service stand-in for ``bench_governor.py``: every ``handle`` is one request of ten calls."""


def parse(req):
    fields = []
    for i in range(100):
        fields.append((req * 31 + i) % 97)
    return fields


def validate(fields):
    total = 0
    for f in fields:
        if f % 3:
            total += f
    return total > 0


def price(fields):
    total = 0.0
    for f in fields:
        total += f * 1.07
    return round(total, 2)


def discount(amount, req):
    rate = 0.05 if req % 7 == 0 else 0.0
    for _ in range(80):
        amount = amount * (1 - rate / 8)
    return amount


def tax(amount):
    parts = [amount * r for r in (0.01, 0.02, 0.03, 0.04)]
    return amount + sum(parts)


def audit(req, amount):
    key = f"{req}:{amount:.2f}"
    return hash(key) & 0xFF


def render(req, amount, tag):
    return {"id": req, "amount": amount, "tag": tag, "ok": True}


def total(fields, req):
    amount = price(fields)
    amount = discount(amount, req)
    return tax(amount)


def handle(req):
    fields = parse(req)
    if not validate(fields):
        return None
    amount = total(fields, req)
    return render(req, amount, audit(req, amount))
