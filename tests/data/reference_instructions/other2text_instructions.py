# A fixture in the file format of the reference's anygpt/src/m_utils/other2text_instructions.py
# (one dict literal: modality -> phrasings for media -> text); the phrasings are this project's own.
other2text_instructions = {
    "speech": [
        "Kindly write out every word you hear in this recording.",
        "Put the spoken words of this clip on paper.",
    ],
    "image": [
        "Tell me in one line what this photograph contains.",
        "Sum up this picture for a reader who cannot see it.",
        "Name what stands out in this image.",
    ],
    "music": [
        "Characterise the mood and instruments of this track.",
    ],
    "audio": [
        "Say which sounds this clip is made of.",
    ]
}
