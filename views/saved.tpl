% rebase("base.tpl", title=title)
<h1>{{heading}}</h1>
<section aria-labelledby="result-title">
  <h2 id="result-title">Saved</h2>
  <p>Thank you: your answers were saved on <time datetime="{{received.isoformat(timespec='seconds')}}">{{received.strftime("%-d %B %Y at %H:%M UTC")}}</time>.</p>
  <p id="result">Age: {{values["age"] or "Empty"}}<br>
  Hobbies: {{", ".join(hobbies.get(value, value) for value in values["hobbies"]) or "No Hobbies?"}}</p>
</section>
<p><a href="/">Fill in the form again</a></p>
