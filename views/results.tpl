% rebase("base.tpl", title=title)
% def submissions(count):
%   return f"{count} submission" if count == 1 else f"{count} submissions"
% end
% total = figures["count"]
<h1>{{title}}</h1>
% if not total:
<p>No submissions yet. Once people send the form, their answers are counted here.</p>
% else:
%   last = figures["last"]
<p>{{submissions(total)}}; the last on <time datetime="{{last.isoformat(timespec='seconds')}}">{{last.strftime("%-d %B %Y at %H:%M UTC")}}</time>.</p>
<section aria-labelledby="hobbies">
  <h2 id="hobbies">Hobbies</h2>
  <p>How many submissions chose each hobby, and their share of all {{total}}.</p>
  % rows = [(hobbies.get(value, value), count, f"{round(100 * count / total)}%") for value, count in figures["hobbies"]]
  % include("chart.tpl", caption="Hobbies chosen", head=("Hobby", "Submissions", "Share"), rows=rows, columns=False)
</section>
%   for name, field in figures["fields"].items():
%     label = name.replace("_", " ").capitalize()
<section aria-labelledby="field-{{name}}">
  <h2 id="field-{{name}}">{{label}}</h2>
  %   if field["kind"] == "number":
  %     rows = [(str(low) if low == high else f"{low}–{high}", count) for low, high, count in field["bins"]]
  %   else:
  %     rows = field["top"] + ([("Others", field["others"])] if field["others"] else [])
  %   end
  %   if rows:
  %     include("chart.tpl", caption=label, head=(label, "Submissions"), rows=rows, columns=field["kind"] == "number")
  %   end
  <p>Left empty: {{submissions(field["empty"])}}.</p>
</section>
%   end
%   recent = sum(count for _, count in figures["days"])
<section aria-labelledby="days">
  <h2 id="days">Submissions per day</h2>
  <p>{{submissions(recent)}} in the last {{len(figures["days"])}} days (UTC), up to today; at most {{max(count for _, count in figures["days"])}} in a day.</p>
  % rows = [(day.strftime("%-d %b"), count) for day, count in figures["days"]]
  % include("chart.tpl", caption="Submissions per day", head=("Day", "Submissions"), rows=rows, columns=True)
</section>
% end
<p><a href="/results.csv">Download every submission (CSV)</a></p>
