console.log("gz")
