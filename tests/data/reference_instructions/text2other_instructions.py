# A fixture in the file format of the reference's anygpt/src/m_utils/text2other_instructions.py
# (one dict literal: modality -> phrasings for text -> media); the phrasings are this project's own.
text2other_instructions = {
    "speech": [
        "Speak the following passage aloud in a calm voice.",
    ],
    "image": [
        "Paint the scene this sentence sets up.",
        "Show the following description as a picture.",
    ],
    "music": [
        "Write a tune that fits these words.",
    ],
    "audio": [
        "Make the sound this text describes.",
    ]
}
