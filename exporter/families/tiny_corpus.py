"""A small English corpus, embedded so tiny tokenizers can be trained offline (no hub, no datasets)."""

CORPUS = """
A photo of a cat. A photo of a dog. A photo of an astronaut. A photo of a rocket.
A photo of a cup of coffee. A photo of a horse. A photo of a camera. A photo of a bird.
A close-up photo of a small kitten sleeping on a red blanket.
Two dogs are playing with a ball in the park on a sunny afternoon.
An astronaut in a white space suit floats above the blue planet Earth.
The rocket launched at dawn, leaving a long trail of smoke across the sky.
A black horse runs through the green field next to an old wooden fence.
Fresh coffee is served in a white cup with a saucer and a silver spoon.
A man holds a vintage camera and takes pictures of the city at night.
This is a drawing of a house with a red roof, three windows and a tall chimney.
A painting of mountains, a lake and pine trees under a cloudy grey sky.
The children were laughing while they built a castle of sand at the beach.
She reads a book by the window; outside, the rain keeps falling softly.
Our team won 3 games in a row, scoring 21 points in the final match!
Please turn left at the second street, then walk straight for 200 meters.
What time does the train to the airport leave? It's at 7:45 in the morning.
I'd like a slice of pizza with cheese, tomato, olives and fresh basil.
They've moved to a bigger apartment near the river and the old bridge.
A satellite image of a city with roads, buildings, parks and a harbour.
A diagram of a simple circuit: a battery, a switch, a resistor and a lamp.
A bowl of fruit with apples, bananas, oranges, grapes and a ripe mango.
The quick brown fox jumps over the lazy dog near the quiet river bank.
A robot arm picks up a blue box from the conveyor belt in a factory.
A cyclist rides a bicycle along the coast road on a windy summer day.
Snow covers the roofs of the small village in the valley during winter.
A plate of pasta with tomato sauce, garlic, and grated parmesan cheese.
A street market full of people buying vegetables, bread, fish and flowers.
A tiny frog sits on a green leaf after the storm; water drops shine on it.
The museum shows ancient statues, golden coins and colourful glass vases.
An aerial view of a forest, a winding road and a lake shaped like a heart.
A black and white portrait of an old woman smiling at the camera.
A screenshot of a computer program with a menu, buttons and a text field.
A close-up of a watch showing ten past ten on a leather strap.
A group of friends having dinner together at a long table in the garden.
The little boy and his grandfather are fishing from a wooden boat.
A yellow taxi waits at the traffic light in a busy street in new york.
A sleeping puppy, a playful kitten and a curious parrot share a sofa.
A sailboat on calm water at sunset, with orange and purple clouds.
A student writes equations on a whiteboard during a physics lecture.
Hot air balloons rise over the desert at sunrise; the sand is golden.
A chef slices onions and carrots in a clean, bright restaurant kitchen.
An electric car is charging in a parking lot next to a row of trees.
A lighthouse stands on the rocks while huge waves crash below it.
We're going to the café for croissants and a cappuccino at nine o'clock.
He'll bring the tent, two sleeping bags, a lamp and some water bottles.
A macro photo of a bee collecting pollen from a purple flower.
The violinist plays a beautiful melody on the stage of the concert hall.
A map of the world with the oceans in blue and the continents in green.
"""
