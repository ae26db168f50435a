import pytest
import torch

from genoconv.errors import InputError
from genoconv.model import Tokenizer


def test_official_vocabulary_one_id_per_base():
    ids = Tokenizer().encode("ACGTN")
    assert ids.tolist() == [7, 8, 9, 10, 11] and ids.dtype == torch.int64  # no [CLS]/[SEP] added


def test_clean_policy_uppercases_and_maps_iupac_to_n():
    assert Tokenizer("clean").encode("acgtnRYSWKMBDHVu-.").tolist() == [7, 8, 9, 10, 11] + [11] * 10 + [10, 11, 11]


def test_strict_policy_is_the_official_tokenizer():
    assert Tokenizer("strict").encode("ACGTNacgtnR").tolist() == [7, 8, 9, 10, 11] + [6] * 6


@pytest.mark.parametrize("policy", ["clean", "strict"])
def test_non_nucleotide_characters_are_input_errors_naming_record_and_position(policy):
    with pytest.raises(InputError, match=r"record 'chr7': character '\*' at position 3 "):
        Tokenizer(policy).encode("AC*GT", record="chr7")


def test_offset_reported_for_chunks_and_unknown_policy():
    with pytest.raises(InputError, match="position 1003"):
        Tokenizer().encode("AAX", record="r", offset=1000)
    with pytest.raises(ValueError):
        Tokenizer("lenient")


def test_decode_round_trip():
    assert Tokenizer.decode(Tokenizer().encode("GATTACA").tolist()) == "GATTACA"


def test_a_non_ascii_character_is_named_as_given():
    """'Ä' was reported as '?' (the ASCII encoding's stand-in), which a real '?' in the input also gives."""
    with pytest.raises(InputError, match="character 'Ä' at position 5 "):
        Tokenizer().encode_array("ACGTÄ", record="r")
    with pytest.raises(InputError, match=r"character '\?' at position 3 "):
        Tokenizer().encode_array("AC?T", record="r")
