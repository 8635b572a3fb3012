"""The demo corpus's word lists: a general English vocabulary and a closed smart-home command domain.

Data only; ``sentences`` turns them into sentences. Changing a list changes what a seed produces.
"""

from __future__ import annotations

__all__ = [
    "ADJECTIVES",
    "ADJ_THAT_NEED_AN",
    "ANIMALS",
    "ANIMATE",
    "CITIES",
    "CONTACTS",
    "DAYS",
    "DEVICES",
    "FEELINGS",
    "FREQUENCY",
    "GENRES",
    "INTRANSITIVE",
    "ITEMS",
    "LOCATIONS",
    "MANNER",
    "NAMES",
    "NOUNS",
    "OBJECTS",
    "OPENABLES",
    "PEOPLE",
    "PERSONS",
    "PLACES",
    "PREPOSITIONS",
    "ROOMS",
    "SMALL_NUMBERS",
    "TASKS",
    "THINGS",
    "TIMER_RANGE",
    "TIMES",
    "TRANSITIVE",
    "UNITS",
    "VI",
    "VT",
    "WEEKDAYS",
]

# --------------------------------------------------------------------------- general vocabulary
# Plain lists, one word (or "singular/plural", "base/third/past/ing") per entry. Words
# that start with a vowel letter but not a vowel sound (one, unit, hour...) are avoided so
# that "a"/"an" follows the first letter.

PEOPLE = (
    "man/men woman/women child/children boy/boys girl/girls baby/babies friend/friends "
    "teacher/teachers doctor/doctors farmer/farmers driver/drivers student/students "
    "neighbor/neighbors king/kings queen/queens mother/mothers father/fathers "
    "sister/sisters brother/brothers uncle/uncles aunt/aunts cook/cooks singer/singers "
    "painter/painters sailor/sailors soldier/soldiers nurse/nurses baker/bakers "
    "player/players writer/writers guest/guests stranger/strangers officer/officers"
).split()
ANIMALS = (
    "dog/dogs cat/cats horse/horses bird/birds fish/fish cow/cows sheep/sheep mouse/mice "
    "rabbit/rabbits duck/ducks goat/goats pig/pigs fox/foxes bear/bears lion/lions "
    "tiger/tigers monkey/monkeys elephant/elephants frog/frogs snake/snakes owl/owls"
).split()
THINGS = (
    "book/books letter/letters box/boxes cup/cups table/tables chair/chairs door/doors "
    "window/windows car/cars boat/boats train/trains bag/bags coat/coats hat/hats "
    "shoe/shoes key/keys phone/phones clock/clocks lamp/lamps picture/pictures "
    "paper/papers pen/pens ball/balls bottle/bottles glass/glasses plate/plates "
    "apple/apples orange/oranges egg/eggs cake/cakes basket/baskets blanket/blankets "
    "bicycle/bicycles camera/cameras candle/candles coin/coins map/maps mirror/mirrors "
    "needle/needles pillow/pillows ring/rings rope/ropes spoon/spoons stone/stones "
    "ticket/tickets tool/tools toy/toys umbrella/umbrellas wallet/wallets watch/watches "
    "wheel/wheels drum/drums guitar/guitars kite/kites ladder/ladders envelope/envelopes"
).split()
PLACES = (
    "house/houses garden/gardens city/cities town/towns village/villages road/roads "
    "street/streets river/rivers lake/lakes mountain/mountains forest/forests "
    "field/fields school/schools church/churches market/markets shop/shops "
    "station/stations park/parks office/offices kitchen/kitchens room/rooms "
    "bridge/bridges island/islands hill/hills beach/beaches farm/farms library/libraries "
    "hospital/hospitals hotel/hotels restaurant/restaurants airport/airports "
    "museum/museums castle/castles harbor/harbors valley/valleys"
).split()
ADJECTIVES = (
    "big small old new young long short tall red blue green yellow white black brown "
    "happy sad quiet loud dark bright warm cold hot wet dry heavy light clean dirty soft "
    "hard strong weak fast slow rich poor busy empty full early late kind clever tired "
    "hungry angry famous strange simple beautiful pretty friendly lucky careful narrow "
    "wide deep sweet fresh broken golden wooden tiny huge gentle brave calm proud shy "
    "funny lazy noisy rare round sharp silver smooth thin thick wild ancient elegant "
    "enormous honest orange purple"
).split()
ADJ_THAT_NEED_AN = ("honest",)  # silent h
NAMES = (
    "anna peter maria john david sarah tom lucy james emma paul kate mark laura george "
    "helen robert alice michael susan daniel rachel simon julia oliver grace henry "
    "sophie frank nina"
).split()
TRANSITIVE = (
    "see/sees/saw find/finds/found take/takes/took bring/brings/brought carry/carries/carried "
    "open/opens/opened close/closes/closed paint/paints/painted build/builds/built "
    "buy/buys/bought sell/sells/sold watch/watches/watched clean/cleans/cleaned "
    "move/moves/moved pull/pulls/pulled push/pushes/pushed wash/washes/washed fix/fixes/fixed "
    "lift/lifts/lifted hold/holds/held read/reads/read draw/draws/drew visit/visits/visited "
    "follow/follows/followed help/helps/helped call/calls/called need/needs/needed "
    "want/wants/wanted like/likes/liked love/loves/loved leave/leaves/left keep/keeps/kept "
    "catch/catches/caught throw/throws/threw drop/drops/dropped miss/misses/missed "
    "remember/remembers/remembered forget/forgets/forgot choose/chooses/chose "
    "hide/hides/hid break/breaks/broke send/sends/sent show/shows/showed check/checks/checked "
    "count/counts/counted fill/fills/filled hear/hears/heard touch/touches/touched "
    "wrap/wraps/wrapped"
).split()
INTRANSITIVE = (
    "walk/walks/walked run/runs/ran sleep/sleeps/slept sit/sits/sat stand/stands/stood "
    "wait/waits/waited laugh/laughs/laughed smile/smiles/smiled sing/sings/sang "
    "dance/dances/danced swim/swims/swam shout/shouts/shouted rest/rests/rested "
    "listen/listens/listened work/works/worked play/plays/played travel/travels/traveled "
    "jump/jumps/jumped arrive/arrives/arrived stay/stays/stayed fall/falls/fell "
    "climb/climbs/climbed hurry/hurries/hurried shiver/shivers/shivered whistle/whistles/whistled"
).split()
PREPOSITIONS = "in on near behind under beside across into from past above below around".split()
TIMES = (
    "yesterday|today|tomorrow|last night|this morning|every day|in the evening|after lunch|"
    "before dinner|at noon|on monday|on tuesday|on wednesday|on thursday|on friday|"
    "on saturday|on sunday|last week|next year|in the winter|in the summer|at midnight|"
    "once again|later that day|every morning"
).split("|")
MANNER = "quickly slowly quietly happily carefully suddenly loudly calmly".split()
FREQUENCY = "always never often sometimes usually rarely".split()
SMALL_NUMBERS = "two three four five six seven eight nine ten eleven twelve twenty".split()
FEELINGS = "think know hope believe heard said".split()


def _pairs(entries: tuple[str, ...] | list[str]) -> list[tuple[str, ...]]:
    return [tuple(e.split("/")) for e in entries]


NOUNS = _pairs(PEOPLE + ANIMALS + THINGS + PLACES)
PERSONS = _pairs(PEOPLE)
OBJECTS = _pairs(ANIMALS + THINGS)
LOCATIONS = _pairs(PLACES + THINGS[:20])
ANIMATE = _pairs(PEOPLE + ANIMALS)
VT = _pairs(TRANSITIVE)
VI = _pairs(INTRANSITIVE)

# ----------------------------------------------------------------- closed domain vocabulary

ROOMS = (
    "kitchen|bedroom|bathroom|living room|dining room|garage|office|hallway|basement|garden|nursery|attic"
).split("|")
DEVICES = "lights|lamp|fan|heater|television|radio|oven|coffee machine|dishwasher|air conditioner".split("|")
OPENABLES = "garage door|front door|back door|blinds|curtains|windows|gate".split("|")
GENRES = "jazz|rock|classical|country|pop|relaxing|dance|folk".split("|")
CITIES = "london|paris|tokyo|boston|berlin|sydney|chicago|dublin|madrid|toronto".split("|")
WEEKDAYS = (
    "today|tomorrow|on monday|on tuesday|on wednesday|on thursday|on friday|on saturday|on sunday".split("|")
)
DAYS = WEEKDAYS + "tonight|this weekend|this afternoon|next week".split("|")
TASKS = (
    "call mom|buy milk|water the plants|feed the cat|take out the trash|walk the dog|"
    "pay the bills|check the mail|pick up the kids|charge my phone|lock the door|"
    "start the laundry|book a table|send the report|take my medicine"
).split("|")
ITEMS = (
    "milk|eggs|bread|butter|cheese|apples|bananas|coffee|tea|rice|pasta|tomatoes|"
    "onions|chicken|soap|sugar|flour|yogurt"
).split("|")
CONTACTS = "mom|dad|grandma|grandpa|my sister|my brother|the office|the doctor|anna|peter".split("|")
UNITS = "seconds|minutes|hours".split("|")
TIMER_RANGE = {"seconds": (10, 90), "minutes": (2, 90), "hours": (2, 12)}
